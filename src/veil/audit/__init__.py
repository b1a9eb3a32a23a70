"""veil.audit"""
