"""veil.catalog"""
