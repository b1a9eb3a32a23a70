"""veil.store"""
