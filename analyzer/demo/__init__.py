"""The TLS demo: mutual-TLS server and client on loopback, captured live and analyzed.

Modules: ``certs`` (CA and certificates), ``server`` and ``client`` (the TLS exchange), ``loss``
(nftables packet loss on lo), ``termination`` (SIGTERM/SIGHUP run the clean-up), ``run`` (the whole
demo); the click commands are ``analyzer.commands.demo``.
Live sniffing is ``analyzer.sources.live``; a live capture analyzed as it comes, ``analyzer.report.live``.
"""
