"""veil.psi"""
