"""veil.release"""
