"""The TLS demo: mutual-TLS server and client on loopback, captured live and analyzed.

Modules: ``certs`` (CA and certificates), ``server`` and ``client`` (the TLS exchange), ``loss``
(nftables packet loss on lo), ``run`` (the whole demo), ``commands`` (the click commands).
Live sniffing is ``analyzer.sources.live``; a live capture analyzed as it comes, ``analyzer.report.live``.
"""
