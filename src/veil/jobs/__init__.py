"""veil.jobs"""
