"""Settings, all from the environment: development needs none, production refuses unsafe defaults.

DJANGO_ENV=production selects production rules (see README, "Configuration").
"""
from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from backoffice.chain_settings import chains_from_env
from backoffice.database_url import database_settings, replica_options

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV={DJANGO_ENV!r} is not one of development, production, test."
    )
PRODUCTION = DJANGO_ENV == "production"

# In development the embedded services write their URLs here (make services / make run).
_SERVICES_ENV = BASE_DIR / ".data" / "services.env"
if not PRODUCTION and _SERVICES_ENV.exists():
    for _line in _SERVICES_ENV.read_text().splitlines():
        _key, _, _value = _line.partition("=")
        env.ENVIRON.setdefault(_key, _value)

DEV_SECRET_KEY = "dev-only-insecure-secret-key-never-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default="" if PRODUCTION else DEV_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS",
                         default=[] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

if PRODUCTION:
    _problems = []
    if not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 32:
        _problems.append("SECRET_KEY is missing, the development default or shorter than 32 characters: "
                         "set SECRET_KEY to a long random value "
                         "(python -c 'import secrets; print(secrets.token_urlsafe(50))').")
    if DEBUG:
        _problems.append("DEBUG is on: unset DEBUG or set DEBUG=false.")
    if not env.str("DATABASE_URL", default=""):
        _problems.append("DATABASE_URL is not set: set it to postgres://USER:PASSWORD@HOST:5432/NAME.")
    if not ALLOWED_HOSTS:
        _problems.append("ALLOWED_HOSTS is empty: set it to the back office's host name(s), comma-separated.")
    if _problems:
        raise ImproperlyConfigured("Production settings refused:\n- " + "\n- ".join(_problems))

INSTALLED_APPS = [
    "backoffice.apps.BackofficeAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "django_prometheus",
    "django_celery_beat",
    # The floor every app stands on: the audit log and alerts (chain, disputes and ops all use them).
    "backoffice.audit",
    "backoffice.alerts",
    "chain",
    "disputes",
    "ops",
]

MIDDLEWARE = [
    "ops.monitoring.views.MonitoringMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "backoffice.security.SessionLimitsMiddleware",
    "backoffice.security.AccessAuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # login throttling first
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",  # verifies (and upgrades) older hashes
]

ROOT_URLCONF = "backoffice.urls"
WSGI_APPLICATION = "backoffice.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "libraries": {"amounts": "backoffice.templatetags.amounts",
                          "fast_admin_list": "backoffice.templatetags.fast_admin_list",
                          "nav_sidebar": "backoffice.templatetags.nav_sidebar"},
        },
    },
]

DATABASES = {
    "default": database_settings(env.str("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/p2p_escrow")),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The URL's own ?connect_timeout= wins over the default; both set would leave one silently ignored.
if "connect_timeout" in DATABASES["default"]["OPTIONS"] and env.str("DB_CONNECT_TIMEOUT", default=""):
    raise ImproperlyConfigured("DATABASE_URL has ?connect_timeout= and DB_CONNECT_TIMEOUT is set too: "
                               "keep one of them.")
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=5))
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_p2p_escrow")}

# A read replica (PostgreSQL streaming replication of the primary), optional. backoffice.db_router sends it the
# reads of the read-only admin pages only (changelists of the mirror, the dashboard, reports, CSV exports), and
# only while its lag stays under DATABASE_REPLICA_MAX_LAG_SECONDS; everything else reads and writes the primary.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=30.0)
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = database_settings(DATABASE_REPLICA_URL, setting="DATABASE_REPLICA_URL")
    DATABASES["replica"]["CONN_MAX_AGE"] = DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["replica"]["CONN_HEALTH_CHECKS"] = True
    # A dead or hung replica must cost a page little: connect, keepalive, TCP and statement timeouts unless the URL
    # sets them (backoffice.database_url.replica_options); the router then reads the primary until the next check.
    DATABASES["replica"]["OPTIONS"] = replica_options(DATABASES["replica"]["OPTIONS"])
    # Under the test runner the replica mirrors the test database instead of getting a throw-away one of its own.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["backoffice.db_router.ReplicaRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "TIMEOUT": 300,
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"  # staff see every time in UTC
USE_I18N = False
# Every date and time shown as 2026-12-05 12:07 UTC (backoffice/formats/en/formats.py).
FORMAT_MODULE_PATH = ["backoffice.formats"]
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "backoffice" / "static"]  # site-wide assets (copy buttons, styles)

LOGIN_URL = "admin:login"

# Sessions: 30 minutes idle (the cookie age; backoffice.security.SessionLimitsMiddleware renews it at
# most once a minute while the session is used), 12 hours at most after login; Django issues a new
# session key at login.
SESSION_COOKIE_AGE = 30 * 60
SESSION_MAX_HOURS = 12
# Step-up: signing, blacklisting and secret rotations need a one-time code this recent.
STEPUP_SECONDS = env.int("STEPUP_SECONDS", default=300)
CSRF_COOKIE_HTTPONLY = True

# Nobody, superusers included, reads another person's TOTP secret or QR code in the device admin.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Login throttling (django-axes): 5 failures per username and address, then 15 minutes. The same
# answer whether the account exists or not. Behind a reverse proxy set TRUSTED_PROXY_COUNT to the
# number of proxies that append to X-Forwarded-For; with 0, the header is ignored.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "backoffice.security.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # its log lines carry addresses
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"

# Content security policy: nothing but this origin; inline style attributes only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# ---------------------------------------------------------------- Celery
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BEAT_SCHEDULER = "backoffice.beat:Scheduler"  # django-celery-beat's, writing last runs within seconds
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves the task for the next one
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
DJANGO_CELERY_BEAT_TZ_AWARE = True
# A queue per job (backoffice.queues): sync.<chain> per chain, actions, checks, alerts.
CELERY_TASK_ROUTES = ("backoffice.queues.route_task",)

# ---------------------------------------------------------------- Chains
# Names follow the runbook (BSC_RPC_URL, BSC_RPC_FALLBACK, ...). In development, addresses left
# unset are read from the local deployment that `make run` writes (.data/chain/deployment.json).
CHAIN_DEPLOYMENT_FILE = Path(env.str("CHAIN_DEPLOYMENT_FILE",
                                     default=str(BASE_DIR / ".data" / "chain" / "deployment.json")))


# CHAINS names the chains (default bsc,ethereum); each reads <PREFIX>_RPC_URL, <PREFIX>_CHAIN_ID, ... with
# the runbook's prefixes BSC and ETH for its two chains and the upper-cased name for any other (see
# backoffice.chain_settings and README, "Configuration"). Adding a chain needs only these variables.
CHAINS = chains_from_env(env.ENVIRON, production=PRODUCTION)
RPC_TIMEOUT_SECONDS = env.float("RPC_TIMEOUT_SECONDS", default=5.0)
# Longest a call waits out a provider's rate limit (Retry-After or backoff) before trying the next provider.
RPC_RATE_LIMIT_MAX_WAIT_SECONDS = env.float("RPC_RATE_LIMIT_MAX_WAIT_SECONDS", default=30.0)

# Signing keys, from the environment or an encrypted keystore file, never the database. Each role
# signs only what it is for: the owner key only in eoa mode; the relayer only pays the gas of a
# Safe's execTransaction (it has no role in any contract); the keeper only calls the public
# timeout functions (autoExpireOrder, autoReleaseToSeller).
OWNER_KEY = env.str("OWNER_KEY", default="")
OWNER_KEYSTORE = env.str("OWNER_KEYSTORE", default="")
OWNER_KEYSTORE_PASSWORD = env.str("OWNER_KEYSTORE_PASSWORD", default="")
RELAYER_KEY = env.str("RELAYER_KEY", default="")
RELAYER_KEYSTORE = env.str("RELAYER_KEYSTORE", default="")
RELAYER_KEYSTORE_PASSWORD = env.str("RELAYER_KEYSTORE_PASSWORD", default="")
KEEPER_KEY = env.str("KEEPER_KEY", default="")
KEEPER_KEYSTORE = env.str("KEEPER_KEYSTORE", default="")
KEEPER_KEYSTORE_PASSWORD = env.str("KEEPER_KEYSTORE_PASSWORD", default="")
# The automatic pause's key: a guardian of the pause module, and nothing else (check refuses it in production
# when it is also a Safe owner or the relayer).
GUARDIAN_KEY = env.str("GUARDIAN_KEY", default="")
GUARDIAN_KEYSTORE = env.str("GUARDIAN_KEYSTORE", default="")
GUARDIAN_KEYSTORE_PASSWORD = env.str("GUARDIAN_KEYSTORE_PASSWORD", default="")
# How long a staff key-registration challenge, and a guardian's pause signature, stay valid.
SIGNING_CHALLENGE_SECONDS = env.int("SIGNING_CHALLENGE_SECONDS", default=600)
GUARDIAN_PAUSE_SECONDS = env.int("GUARDIAN_PAUSE_SECONDS", default=3600)
# A timeout action whose simulation reverted: the order is proposed again only after this long (not every run).
TIMEOUT_RETRY_SECONDS = env.int("TIMEOUT_RETRY_SECONDS", default=3600)
# The grace a resume request offers by default: orders whose seller or buyer deadline passed during the pause are
# left alone by the timeout keeper this long after the unpause (0: none; at most 7 days).
RESUME_GRACE_SECONDS = env.int("RESUME_GRACE_SECONDS", default=86400)
# The actions check (P2s): a transaction signed or sent this long ago and still not mined is stuck; an order still
# funded or delivered this long past its seller or buyer deadline means the timeout keeper is not doing its job.
ACTION_STUCK_SECONDS = env.int("ACTION_STUCK_SECONDS", default=900)
# The token symbols worth one US dollar each: the large-order rule ("a single order over 5,000 USDT") compares only
# these with LARGE_ORDER_USDT; 3 WBTC is not 3 USDT, and the back office has no price for other tokens.
USD_STABLECOINS = [s.strip().upper() for s in env.str("USD_STABLECOINS", default="USDT,USDC,BUSD,DAI,FDUSD,TUSD")
                   .split(",") if s.strip()]
TIMEOUT_OVERDUE_SECONDS = env.int("TIMEOUT_OVERDUE_SECONDS", default=7200)

# The alert lifecycle: a firing alert resolves after this many runs of its check in a row find it clear; a key that
# fires this many times within an hour is flapping (its fires and resolutions are not sent until it settles).
ALERT_CLEAN_RUNS = env.int("ALERT_CLEAN_RUNS", default=1)
ALERT_FLAP_LIMIT = env.int("ALERT_FLAP_LIMIT", default=4)
if ALERT_CLEAN_RUNS < 1 or ALERT_FLAP_LIMIT < 2:
    raise ImproperlyConfigured(f"ALERT_CLEAN_RUNS is {ALERT_CLEAN_RUNS} and ALERT_FLAP_LIMIT {ALERT_FLAP_LIMIT}: use "
                               "ALERT_CLEAN_RUNS=1 or more (runs found clear before an alert resolves) and "
                               "ALERT_FLAP_LIMIT=2 or more (fires within an hour that make an alert flapping).")
# The anvil that pause drills fork the chain with (empty: node_modules/.bin/anvil, then anvil on PATH).
ANVIL_BIN = env.str("ANVIL_BIN", default="")

# /metrics is not public: Prometheus sends this bearer token (staff sessions also work).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# Backups (ops/backups/): pg_dump/pg_restore from PG_BIN_DIR (empty: in development and tests the binaries of
# the pgserver wheel that runs the embedded PostgreSQL, in production those on PATH), custom-format dumps in
# BACKUP_DIR (empty: .data/backups, created on first use; a configured directory is never created, since a
# missing one usually means an unmounted backup volume), removed after BACKUP_RETENTION_DAYS except the newest good one
# and the newest one whose restore test passed (with those after it).
# pg_dump waits at most BACKUP_LOCK_WAIT_SECONDS for the locks it takes on every table (an ALTER TABLE or a LOCK TABLE
# holding one fails the backup instead of hanging it), and pg_dump, or a restore test's pg_restore, is stopped after
# BACKUP_TIMEOUT_SECONDS: a hung run would hold the backup lock and refuse every next one.
PG_BIN_DIR = env.str("PG_BIN_DIR", default="")
BACKUP_DIR = env.str("BACKUP_DIR", default="")
BACKUP_RETENTION_DAYS = env.int("BACKUP_RETENTION_DAYS", default=30)
if BACKUP_RETENTION_DAYS < 1:
    raise ImproperlyConfigured(f"BACKUP_RETENTION_DAYS={BACKUP_RETENTION_DAYS} would remove every backup but the "
                               f"newest as soon as it is taken: set it to a number of days of 1 or more (e.g. 30), or "
                               f"unset it for the default of 30.")
BACKUP_LOCK_WAIT_SECONDS = env.int("BACKUP_LOCK_WAIT_SECONDS", default=300)
BACKUP_TIMEOUT_SECONDS = env.int("BACKUP_TIMEOUT_SECONDS", default=4 * 3600)
for _name, _fix in (("BACKUP_LOCK_WAIT_SECONDS", "e.g. 300"), ("BACKUP_TIMEOUT_SECONDS", "e.g. 14400 (4 hours)")):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name}={globals()[_name]} would fail every backup at once: set it to a number "
                                   f"of seconds of 1 or more ({_fix}), or unset it for the default.")

# Trust and safety: a dispute older than this is over its review SLA (queue and review page).
DISPUTE_SLA_HOURS = env.int("DISPUTE_SLA_HOURS", default=48)
# Sanctions lists the daily refresh imports (comma-separated URLs: OFAC's sdn_advanced.xml, or derived address lists
# such as sanctioned_addresses_ETH.txt); none: the refresh is off, lists are imported by hand (README: Sanctions).
SANCTIONS_LIST_URLS = [u.strip() for u in env.str("SANCTIONS_LIST_URL", default="").split(",") if u.strip()]
for _url in SANCTIONS_LIST_URLS:
    if not _url.startswith(("https://", "http://")):
        raise ImproperlyConfigured(f"SANCTIONS_LIST_URL holds {_url[:80]!r}: use http(s) URLs separated by commas, "
                                   "e.g. https://sanctionslistservice.ofac.treas.gov/api/PublicationPreview/exports/"
                                   "SDN_ADVANCED.XML, or unset it to import lists by hand.")
# A node whose newest block is stamped further than this from the server's clock (ahead, or behind: a stalled
# node) makes its chain's health check degraded: every age and deadline the back office shows depends on it.
CHAIN_CLOCK_TOLERANCE_SECONDS = env.int("CHAIN_CLOCK_TOLERANCE_SECONDS", default=300)

# Evidence CIDs are shown as links through this gateway.
IPFS_GATEWAY = env.str("IPFS_GATEWAY", default="https://ipfs.io/ipfs/")

# ---------------------------------------------------------------- Logging
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "backoffice.logging.RedactFilter"}},
    "formatters": {
        "json": {
            "()": "backoffice.logging.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "timestamp", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "web3": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}
