"""veil.sdk"""
