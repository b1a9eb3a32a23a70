"""veil.tee"""
