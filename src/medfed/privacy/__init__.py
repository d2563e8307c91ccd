"""Differential privacy for medfed: DP-SGD at each hospital, client-level accounting for the
server, and a membership-inference audit. Import the submodules (``dp``, ``accounting``,
``membership_inference``, ``clipping``) directly; this package imports nothing heavy on its own."""
