"""Browser fixtures: Debian's headless Chromium driven by Selenium against pytest-django's live server.

Screenshots go to artifacts/browser/<test>/<NN>-<step>.png (git-ignored), at each major step and,
when a test fails, of every open browser. Staff log in for real: password, then a one-time code
computed from their TOTP device, as a person with an authenticator app would.
"""
from __future__ import annotations

import base64
import importlib
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--window-size=1400,1000")
PASSWORD = "browser-test-password-42"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failed test at teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def totp_code(key: bytes, step: int = 30, t0: int = 0, digits: int = 6, drift: int = 0) -> str:
    from django_otp.oath import TOTP

    return str(TOTP(key, step, t0, digits, drift).token()).zfill(digits)


def device_code(device) -> str:
    """The code an authenticator app shows now for this confirmed TOTP device."""
    return totp_code(device.bin_key, device.step, device.t0, device.digits, device.drift)


def secret_code(secret: str) -> str:
    """The code for a base32 secret as shown on the enrolment page."""
    padded = secret.strip().upper() + "=" * (-len(secret.strip()) % 8)
    return totp_code(base64.b32decode(padded))


class Browser:
    """One Chromium with its own profile (so its own session cookies), plus screenshot and form helpers."""

    def __init__(self, driver, base_url: str, shots: "Screenshots", name: str):
        self.driver, self.base_url, self.shots, self.name = driver, base_url, shots, name

    def get(self, path: str) -> None:
        """Open a page and wait until it is that page, fully loaded (not the previous one finishing)."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(self.base_url + path)
        WebDriverWait(self.driver, 20).until(
            lambda d: d.current_url.startswith(self.base_url + path.split("?")[0])
            and d.execute_script("return document.readyState") == "complete")

    def wait_for(self, css: str):
        """The elements matching `css`, once at least one is on the page."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, 20).until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, css)))

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def button(self, text: str):
        """A submit button or <input type=submit> by its visible text."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(
            By.XPATH, f"//button[normalize-space()='{text}'] | //input[@type='submit' and @value='{text}']")

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def select(self, css: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find(css)).select_by_value(value)

    def click_and_wait(self, element) -> None:
        """Click something that loads a new page; wait until the old page is gone and the new one loaded.

        While the old document is being torn down, chromedriver may answer "node does not belong to the
        document" instead of "stale element": both mean the old page is gone.
        """
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        old = self.find("html")
        element.click()

        def old_page_gone(driver) -> bool:
            try:
                old.is_enabled()
            except WebDriverException:
                return True
            return False

        WebDriverWait(self.driver, 20).until(old_page_gone)
        WebDriverWait(self.driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")

    @property
    def text(self) -> str:
        return self.find("body").text

    @property
    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base_url)

    def shot(self, step: str) -> Path:
        return self.shots.take(self, step)

    def login(self, username: str, password: str = PASSWORD, *, code=None) -> None:
        """Password page, then the one-time code page (`code` is a callable: the code is read at the last moment)."""
        self.get("/admin/login/")
        self.fill("#id_username", username)
        self.fill("#id_password", password)
        self.shot(f"{username}-password")
        self.click_and_wait(self.button("Log in"))
        assert self.path.startswith("/admin/otp/"), (f"expected the one-time code page, got {self.path}: "
                                                     f"{self.text[:300]}")
        if code is not None:
            self.fill("#id_code", code())
            self.shot(f"{username}-otp")
            self.click_and_wait(self.button("Verify"))


class Screenshots:
    """artifacts/browser/<test name>/<NN>-<browser>-<step>.png, numbered in the order they were taken."""

    def __init__(self, test_name: str):
        self.dir = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.paths: list[Path] = []

    def take(self, browser: Browser, step: str) -> Path:
        self.count += 1
        path = self.dir / f"{self.count:02d}-{browser.name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', step)}.png"
        browser.driver.save_screenshot(str(path))
        self.paths.append(path)
        return path


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[Path, Path]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"The browser tests need Debian's chromium and chromium-driver, but {', '.join(missing)} "
                    "is missing: run `make install` (it installs them with apt-get).", pytrace=False)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def screenshots(request) -> Screenshots:
    return Screenshots(request.node.name)


@pytest.fixture(scope="session")
def _release_test_database(django_db_setup, django_db_blocker):
    """At the end of the session, end this process's leftover connections to the test database so it can be
    dropped: the live server's pages (the dashboard's health checks) run queries in the health thread pool,
    whose threads keep their persistent connections (CONN_MAX_AGE) until the process exits."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")


@pytest.fixture
def open_browser(request, _release_test_database, chromium_paths, live_server, screenshots):
    """Factory: `open_browser("alice")` starts a fresh Chromium (own profile, own session) on the live server.

    (The test database is set up first, so it outlives the live server at the end of the session.)
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = chromium_paths
    opened: list[tuple[Browser, str]] = []

    def open_(name: str) -> Browser:
        profile = tempfile.mkdtemp(prefix=f"chromium-{name}-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(chromium)
        for arg in CHROME_ARGS:
            options.add_argument(arg)
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(chromedriver)), options=options)
        driver.set_page_load_timeout(30)
        browser = Browser(driver, live_server.url, screenshots, name)
        opened.append((browser, profile))
        return browser

    yield open_

    failed = any(getattr(request.node, f"rep_{when}", None) is not None and getattr(request.node, f"rep_{when}").failed
                 for when in ("setup", "call"))
    for browser, profile in opened:
        try:
            if failed:
                browser.shot("FAILED")
        except Exception:  # noqa: BLE001 - a dead browser must not hide the test's own failure
            pass
        finally:
            browser.driver.quit()
            shutil.rmtree(profile, ignore_errors=True)


# Models that later moved to another app (ops 0017): the migration's labels name their old app.
MOVED_PERMISSIONS = {"ops.view_auditlog": "audit.view_auditlog", "ops.view_alert": "alerts.view_alert",
                     "ops.change_alert": "alerts.change_alert"}


@pytest.fixture
def roles(db):
    """The role groups of ops/migrations/0008_roles.py (a transactional test's flush removes them)."""
    migration = importlib.import_module("ops.migrations.0008_roles")
    groups = {}
    for name, labels in migration.ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = []
        for label in labels:
            app_label, codename = MOVED_PERMISSIONS.get(label, label).split(".")
            perms.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(perms)
        groups[name] = group
    return groups


@pytest.fixture
def make_staff(django_user_model, roles):
    """A staff user with a password, the given roles and (unless `enrolled=False`) a confirmed authenticator."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    def make(username: str, *role_names: str, enrolled: bool = True, superuser: bool = False):
        user = django_user_model.objects.create_user(username, password=PASSWORD, is_staff=True,
                                                      is_superuser=superuser)
        user.groups.set([roles[name] for name in role_names])
        if enrolled:
            TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
        return user

    return make


def _deployment(tmp_path_factory, custody: str):
    from backoffice.devservices import running_anvil
    from chain.local import deploy_local

    with running_anvil("bsc", block_time="") as (_proc, url):
        path = tmp_path_factory.mktemp(f"browser-deployment-{custody}") / "deployment.json"
        data = deploy_local({"bsc": {"rpc_url": url, "confirmations": 0, "custody": custody}}, path=path)["bsc"]
        yield path, data


@pytest.fixture(scope="module")
def anvil_deployment(tmp_path_factory):
    """A fresh anvil (automine) for the module with the contracts deployed, owned by one key (eoa custody)."""
    yield from _deployment(tmp_path_factory, "eoa")


@pytest.fixture(scope="module")
def safe_deployment(tmp_path_factory):
    """The same, owned by a 2-of-3 Safe (accounts 40, 41, 42) with the guardian module."""
    yield from _deployment(tmp_path_factory, "safe")


def _point_at(settings, path, mode: str) -> None:
    from backoffice.devservices import ANVIL_OWNER_KEY, KEEPER_INDEX, RELAYER_INDEX, anvil_key
    from chain import rpc, transactions

    settings.CHAIN_DEPLOYMENT_FILE = path
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "owner_mode": mode}}
    settings.OWNER_KEY = ANVIL_OWNER_KEY if mode == "eoa" else ""
    settings.OWNER_KEYSTORE = ""
    settings.RELAYER_KEY = anvil_key(RELAYER_INDEX)
    settings.KEEPER_KEY = anvil_key(KEEPER_INDEX)
    rpc.reset_clients()
    transactions.reset_signer()


@pytest.fixture
def local_chain(anvil_deployment, settings):
    """Point the back office (and so the live server, same process) at the module's anvil with the owner key."""
    from chain import rpc, transactions

    path, data = anvil_deployment
    _point_at(settings, path, "eoa")
    yield data
    rpc.reset_clients()
    transactions.reset_signer()


@pytest.fixture
def safe_local_chain(safe_deployment, settings):
    """The back office in safe custody against the Safe-owned anvil: relayer and keeper keys only."""
    from chain import rpc, transactions

    path, data = safe_deployment
    _point_at(settings, path, "safe")
    yield data
    rpc.reset_clients()
    transactions.reset_signer()
