"""veil.server"""
