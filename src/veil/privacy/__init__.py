"""veil.privacy"""
