"""nats.connect's options for a link (config/nats.py): secrets read from files or the environment, a verifying TLS
context when TLS is asked for.

Below both the sinks and the queues in the layers: a sidecar's sink and a relay's queue connect the same way.
Secrets go only to nats-py; a bad one is a ConfigError naming the key (`sinks.NAME.token_env`, `relay.token_file`),
never the value. Not responsible for connecting or for what the link carries.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from shipper.config.nats import NatsLink
from shipper.errors import ConfigError
from shipper.secrets import read_secret


def tls_context(where: str, config: NatsLink) -> ssl.SSLContext | None:
    """A verifying context when TLS is asked for (a tls:// server, a CA file or a client certificate), else None."""
    wanted = config.ca_file or config.cert_file or any(url.startswith("tls://") for url in config.servers)
    if not wanted:
        return None
    try:
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        if config.cert_file is not None and config.key_file is not None:
            context.load_cert_chain(str(config.cert_file), str(config.key_file))
    except ssl.SSLError as exc:
        raise ConfigError(f"{where}: TLS files hold no usable certificate or key ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot load a TLS file: {exc.strerror or exc}") from None
    return context


def connect_options(where: str, config: NatsLink, environ: Mapping[str, str]) -> dict[str, Any]:
    """nats.connect's keyword arguments for the link configured at `where` (`sinks.NAME`, `relay`)."""
    options: dict[str, Any] = {}
    token = read_secret(where, config.token_env, config.token_file, environ, "token")
    if token is not None:
        options["token"] = token
    if config.user is not None:
        options["user"] = config.user
        password = read_secret(where, config.password_env, config.password_file, environ, "password")
        if password is not None:
            options["password"] = password
    for key, path in (("credentials_file", config.credentials_file), ("nkey_seed_file", config.nkey_seed_file)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{where}.{key}: cannot read {path}")
    if config.credentials_file is not None:
        options["user_credentials"] = str(config.credentials_file)
    if config.nkey_seed_file is not None:
        options["nkeys_seed"] = str(config.nkey_seed_file)
    context = tls_context(where, config)
    if context is not None:
        options["tls"] = context
    return options
