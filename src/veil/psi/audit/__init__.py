"""veil.psi.audit: how much membership the revealed sizes and sums leak (spec §10, AnonPSI).

Pure cores, no I/O: `population` (X and the hidden truth), `oracles` (what one run reveals, for
plain / multi-ID ECDH-PSI, DPCA-PSI sampled or run for real, the reference's masking, PSI-SUM
and PPAM sums with or without MPC-DualDP), `attacks` (Guo et al., DyPathBlazer,
TreeSumExplorer, ActBayesian, sum-only), `metrics` (leakage, precision, advantage, the DP
bound), `sweep` and `linkage` (the cascade's cross-identifier test). The CLI
(`veil psi audit`) writes the CSV and plot.
"""

from __future__ import annotations
