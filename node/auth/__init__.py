"""Who may use the web side, and as what: accounts, API tokens, roles, sessions, CSRF.

Each module does one job and reads no settings at import time: ``passwords`` (argon2),
``roles`` (viewer < operator < admin; who sees patient identifiers), ``principal``
(who a request acts as), ``accounts`` and ``tokens`` (the stores), ``sessions`` (the
signed session cookie), ``csrf`` (cross-site checks), ``actions`` (what is recorded of
sign-ins and operator actions), ``bootstrap`` (the first admin), ``cli_commands``
(``ainode users`` and ``ainode tokens``), ``oidc`` (sign-in through an OpenID Connect
provider) with ``oidc_claims`` (its ID token checked, its role claim mapped) and
``oidc_settings`` (its ``AINODE_OIDC_*`` settings).
"""
