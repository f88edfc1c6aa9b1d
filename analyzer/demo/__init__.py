"""The TLS demo: mutual-TLS server and client on loopback, captured live and analyzed.

Modules: ``certs`` (CA and certificates), ``server`` and ``client`` (the TLS exchange), ``loss``
(nftables packet loss on lo), ``run`` (the whole demo), ``commands`` (the click commands).
Live capture itself is ``analyzer.capture.live``.
"""
