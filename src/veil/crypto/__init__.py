"""veil.crypto"""
