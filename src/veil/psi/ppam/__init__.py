"""veil.psi.ppam: private ads measurement (spec §8) on the shares of a DPCA-PSI run.

Attribution and lift are computed inside two-party computation (SecretFlow SPU, Cheetah, one
process per party in `.venv-mpc`) and only totals carrying MPC-DualDP noise (§9) are revealed.
Entry point: `measure.measure`; CLI: `veil psi measure`. See ../README.md.
"""
