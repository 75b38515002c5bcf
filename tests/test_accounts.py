"""Accounts of the directory file: signing in, setting a password, and the
run's snapshot, which gets names and roles but never a password hash."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from baton import cli
from baton.accounts import Accounts, add_passkey, hash_password, set_password
from baton.config import ConfigError, RunConfigCache, load_run_config
from baton.gates import User
from baton.keys import MissingKey, Signer, new_key
from baton.signing import Passkey
from tests.conftest import ROOT

BATON_TOML = """\
[directory]
file = "people/directory.toml"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A baton.toml naming a copy of the repo's directory, in its own folder."""
    (tmp_path / "people").mkdir()
    shutil.copy(ROOT / "directory.toml", tmp_path / "people" / "directory.toml")
    path = tmp_path / "baton.toml"
    path.write_text(BATON_TOML)
    monkeypatch.setenv("BATON_CONFIG", str(path))
    monkeypatch.delenv("BATON_DIRECTORY")
    return path


@pytest.fixture
def directory(config: Path) -> Path:
    return config.parent / "people" / "directory.toml"


def test_verify_accepts_the_password_and_nothing_else(directory: Path) -> None:
    accounts = Accounts.load(directory)

    rita = accounts.verify("rita", "rita-demo")
    assert rita is not None
    assert (rita.user, rita.name, rita.roles) == ("rita", "Rita Reviewer", ("reviewer",))
    assert "argon2" not in repr(rita)
    assert accounts.verify("rita", "sam-demo") is None
    assert accounts.verify("rita", "") is None
    assert accounts.verify("nobody", "rita-demo") is None


def test_a_user_without_a_password_exists_but_cannot_sign_in(tmp_path: Path) -> None:
    path = tmp_path / "directory.toml"
    path.write_text('[users.otto]\nname = "Otto"\nroles = ["reviewer"]\n')
    accounts = Accounts.load(path)

    assert accounts.get("otto") is not None
    assert accounts.verify("otto", "") is None


def test_the_run_snapshot_has_names_and_roles_and_never_a_hash(config: Path) -> None:
    snapshot = load_run_config()

    assert snapshot.directory.users["sam"] == User(
        name="Sam Supervisor", roles=["supervisor", "reviewer"]
    )
    people = {"rita", "sam", "carl", "vera", "ada", "alex", "anna", "bob", "ivan", "tess", "paul"}
    people |= {"rachel", "helen", "hugo", "frank", "sofia", "max", "nora", "cora", "colin"}
    services = {"mailroom", "warehouse", "crm", "mailhook"}
    assert set(snapshot.directory.users) == people | services
    assert {u for u in services if snapshot.directory.users[u].kind == "service"} == services
    assert "argon2" not in snapshot.model_dump_json()
    assert "password" not in snapshot.model_dump_json()


def test_the_repository_config_reads_its_directory_file() -> None:
    users = load_run_config(ROOT / "baton.toml").directory.users
    assert users["vera"].roles == ["controller", "reviewer"]
    assert users["ada"].roles == ["admin"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"no file at .*people/directory.toml: create it with one \[users.<name>\] table"),
        ("[users.rita\n", r"people/directory.toml is not valid TOML"),
        ('[users.rita]\nrole = ["reviewer"]\n', r"is not a valid directory of users"),
        ('[users."rita smith"]\nname = "R"\n', r"user name 'rita smith' may hold only letters"),
    ],
)
def test_a_missing_or_invalid_directory_file_says_which_and_how_to_fix_it(
    directory: Path, content: str | None, message: str
) -> None:
    if content is None:
        directory.unlink()
    else:
        directory.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_run_config()


def test_users_left_in_baton_toml_are_pointed_to_the_new_file(config: Path) -> None:
    config.write_text('[directory.users.rita]\nname = "Rita"\nroles = ["reviewer"]\n')
    with pytest.raises(ConfigError, match=r"move them to directory.toml as \[users.<name>\]"):
        load_run_config()


def test_a_hash_that_is_not_argon2_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "directory.toml"
    path.write_text('[users.rita]\nname = "Rita"\npassword_hash = "plain-text"\n')
    with pytest.raises(ConfigError, match="set it with `baton users set-password rita`"):
        Accounts.load(path)


def test_set_password_changes_one_line_and_keeps_the_rest(directory: Path) -> None:
    before = directory.read_text()
    set_password(directory, "carl", "a-new-secret")

    after = directory.read_text()
    changed = [
        (old, new)
        for old, new in zip(before.splitlines(), after.splitlines(), strict=True)
        if old != new
    ]
    assert len(changed) == 1 and changed[0][1].startswith('password_hash = "$argon2id$')
    assert after.startswith("# Baton's users")
    accounts = Accounts.load(directory)
    assert accounts.verify("carl", "a-new-secret") is not None
    assert accounts.verify("carl", "carl-demo") is None
    assert accounts.verify("rita", "rita-demo") is not None


def test_set_password_adds_a_hash_to_a_user_who_had_none(tmp_path: Path) -> None:
    path = tmp_path / "directory.toml"
    path.write_text(
        '[users.otto] # the auditor\nname = "Otto"\nroles = [\n  "auditor",\n]\n\n'
        '[users.rita]\nname = "Rita"\npassword_hash = "' + hash_password("rita-demo") + '"\n'
    )
    set_password(path, "otto", "otto-secret")

    accounts = Accounts.load(path)
    assert accounts.verify("otto", "otto-secret") is not None
    assert accounts.verify("rita", "rita-demo") is not None
    assert path.read_text().index("password_hash") < path.read_text().index("[users.rita]")


def test_set_password_refuses_what_it_cannot_do_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "directory.toml"
    original = 'users.rita = { name = "Rita", roles = ["reviewer"] }\n'
    path.write_text(original)

    with pytest.raises(ConfigError, match=r"write the user as such a table"):
        set_password(path, "rita", "long-enough")
    with pytest.raises(LookupError, match=r"no user 'sam' in .*add a \[users.sam\] table"):
        set_password(path, "sam", "long-enough")
    with pytest.raises(ValueError, match="at least 8 characters"):
        set_password(path, "rita", "short")
    assert path.read_text() == original


def test_the_command_sets_a_password_from_stdin_or_a_prompt_twice(
    directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-1\n"))
    assert cli.main(["users", "set-password", "vera", "--password-stdin"]) == 0
    assert f"set the password of vera in {directory}" in capsys.readouterr().out
    assert Accounts.load(directory).verify("vera", "from-stdin-1") is not None

    typed = iter(["prompted-1", "prompted-2"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert cli.main(["users", "set-password", "vera"]) == 2
    assert "the two passwords differ; nothing changed" in capsys.readouterr().err
    assert Accounts.load(directory).verify("vera", "from-stdin-1") is not None


def test_unknown_users_cost_a_hash_check_like_known_ones(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answering faster for a name that does not exist would tell which do."""
    checked: list[str] = []
    hasher = PasswordHasher()

    class Spy:
        def verify(self, stored: str, password: str) -> bool:
            checked.append(stored)
            return hasher.verify(stored, password)

    monkeypatch.setattr("baton.accounts._HASHER", Spy())
    accounts = Accounts.load(directory)
    for user in ("rita", "nobody"):
        assert accounts.verify(user, "guess-guess") is None
    assert len(checked) == 2 and all(h.startswith("$argon2id$") for h in checked)


def test_a_workers_snapshots_follow_edits_of_the_directory_and_config(
    config: Path, directory: Path
) -> None:
    """The worker reads its config files once and again only after an edit:
    a role revoked in the directory applies to every run started after."""
    files = RunConfigCache()
    first = files.load()
    assert files.load() is first, "unchanged files are not read again"
    assert "reviewer" in first.directory.users["rita"].roles

    text = directory.read_text()
    directory.write_text(text.replace('roles = ["reviewer"]', 'roles = ["clerk"]', 1))
    assert files.load().directory.users["rita"].roles == ["clerk"]

    config.write_text(BATON_TOML + "\n[thresholds]\nreview_min_confidence = 0.95\n")
    assert files.load().thresholds == {"review_min_confidence": 0.95}
    assert files.load().digest != first.digest


def test_a_new_key_is_private_and_its_public_half_joins_the_directory(
    directory: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BATON_KEYS_DIR", str(tmp_path / "my-keys"))
    before = directory.read_text()

    assert cli.main(["keys", "new", "--as", "rita"]) == 0
    printed = capsys.readouterr().out
    key_file = tmp_path / "my-keys" / "rita.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    public_key = Signer.load("rita").public_key
    assert f"baton users add-key rita {public_key}" in printed
    assert cli.main(["keys", "new", "--as", "rita"]) == 2
    assert f"exists already; its public key is `{public_key}`" in capsys.readouterr().err

    assert cli.main(["users", "add-key", "rita", public_key]) == 0
    assert load_run_config().directory.users["rita"].keys == [public_key]
    rita_hash = next(line for line in before.splitlines() if line.startswith("password_hash"))
    assert directory.read_text() == before.replace(
        rita_hash, f'{rita_hash}\nkeys = ["{public_key}"]', 1
    ), "one line added to rita's table, the rest of the file as it was"
    assert cli.main(["users", "add-key", "rita", public_key]) == 0
    assert "has key" in capsys.readouterr().out
    assert load_run_config().directory.users["rita"].keys == [public_key]


def test_a_key_that_is_not_one_is_refused_with_the_fix(
    directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = directory.read_text()
    assert cli.main(["users", "add-key", "rita", "ed25519:bm90IGEga2V5"]) == 2
    assert "is not an Ed25519 public key: `baton keys new --as <user>`" in capsys.readouterr().err
    assert cli.main(["users", "add-key", "rita", '{"id": "x"}']) == 2
    assert "not a passkey" in capsys.readouterr().err
    assert cli.main(["users", "add-key", "nobody", "ed25519:" + "A" * 43 + "="]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    assert directory.read_text() == before


def test_a_passkey_is_added_as_an_inline_table(directory: Path) -> None:
    passkey = Passkey(
        id="Y3JlZA",
        public_key="MCowBQYDK2VwAyEA" + "A" * 43 + "=",
        rp_id="localhost",
        origin="http://localhost:8200",
    )
    assert add_passkey(directory, "vera", passkey)
    assert not add_passkey(directory, "vera", passkey)
    assert load_run_config().directory.users["vera"].passkeys == [passkey]


def test_a_key_file_others_can_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_KEYS_DIR", str(tmp_path / "other-keys"))
    path, _ = new_key("sam")
    path.chmod(0o644)
    with pytest.raises(PermissionError, match=f"chmod 600 {path}"):
        Signer.load("sam")
    with pytest.raises(MissingKey, match="`baton keys new --as nobody`"):
        Signer.load("nobody")
