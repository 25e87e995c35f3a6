"""Job files: validated up front, errors name the file, the key, the value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, Job

DEMO = "jobs/demo.toml"


def write(tmp_path, text: str):
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "jobs").glob("*.toml")), ids=lambda p: p.name)
def test_the_shipped_jobs_validate(path):
    job = Job.load(path)
    assert job.stages[0] == "fetch" and job.stages[-1] in ("report", "export")
    assert job.options("dedup").seed == job.config.job.seed


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, '[job]\nname = "x"\ninput = "."\n[clean]\nmin_wrods = 3\n')
    with pytest.raises(ConfigError) as info:
        Job.load(path)
    assert "clean.min_wrods" in str(info.value) and "unknown key" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, '[job]\ninput = "."\n[engine]\nworkers = "many"\n[clean]\n')
    with pytest.raises(ConfigError) as info:
        Job.load(path)
    assert "engine.workers" in str(info.value) and "'many'" in str(info.value)


def test_bad_choice_lists_the_allowed_values(tmp_path):
    path = write(tmp_path, '[job]\ninput = "."\nstages = ["clean", "polish"]\n[clean]\n')
    with pytest.raises(ConfigError) as info:
        Job.load(path)
    message = str(info.value)
    assert "job.stages" in message and "'polish'" in message and "'dedup'" in message


def test_missing_input_folder_is_named(tmp_path):
    path = write(tmp_path, f'[job]\ninput = "{tmp_path}/nowhere"\n[clean]\n')
    with pytest.raises(ConfigError) as info:
        Job.load(path)
    assert "job.input" in str(info.value) and "nowhere" in str(info.value)


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        Job.load(write(tmp_path, "[job\n"))
    with pytest.raises(ConfigError, match="job file not found"):
        Job.load(tmp_path / "absent.toml")


def test_cli_fails_fast_with_exit_2(tmp_path):
    path = write(tmp_path, '[job]\ninput = "."\n[dedup]\nthreshold = "high"\n')
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "dedup.threshold" in done.stderr and "'high'" in done.stderr


@pytest.mark.parametrize(("section", "expected"), [
    ('[engine]\nmemory_limit = "lots"\n', "key `engine.memory_limit`: Value error, memory_limit: 'lots' is not a size"),
    ("[engine]\nworkers = -1\n", "key `engine.workers`: Value error, workers: -1 is negative"),
    ("[engine]\nworkers = 100000\n", "key `engine.workers`: Value error, workers: 100000 on"),
    ("[clean]\nmin_words = 500\nmax_words = 100\n", "min_words (500) is greater than max_words (100)"),
])
def test_job_load_refuses_settings_that_would_fail_or_waste_the_run_later(tmp_path, section, expected):
    path = write(tmp_path, f'[job]\ninput = "."\n{section}[dedup]\n')
    with pytest.raises(ConfigError) as info:
        Job.load(path)
    assert expected in str(info.value)


def test_a_bad_or_unreadable_key_file_is_found_when_the_job_loads(tmp_path):
    keys = tmp_path / "keys.json"
    path = write(tmp_path, f'[job]\ninput = "."\n[clean]\n[split]\nencrypt_key_file = "{keys}"\n')
    with pytest.raises(ConfigError, match=r"key `split.encrypt_key_file`: .*keys.json does not exist"):
        Job.load(path)
    keys.write_text("{not json")
    keys.chmod(0o600)
    with pytest.raises(ConfigError, match=r"key `split.encrypt_key_file`: .*keys.json is not JSON"):
        Job.load(path)
    keys.chmod(0o644)
    with pytest.raises(ConfigError, match=r"key `split.encrypt_key_file`: .*chmod 600"):
        Job.load(path)


@pytest.mark.parametrize(("flags", "expected"), [
    (["--workers", "-1"], "error: --workers: -1 is negative"),
    (["--workers", "1000"], "error: --workers: 1000 on"),
    (["--memory-limit", "lots"], "error: --memory-limit: 'lots' is not a size"),
])
def test_stage_commands_refuse_bad_engine_flags_before_any_work(tmp_path, flags, expected):
    done = subprocess.run([sys.executable, "-m", "pipeline", "clean", "--input", str(tmp_path),
                           "--output", str(tmp_path / "out"), *flags], capture_output=True, text=True)
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr


def test_run_refuses_bad_engine_flags_with_the_job_files_checks(tmp_path):
    job = write(tmp_path, '[job]\ninput = "."\n[clean]\n')
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", str(job), "--out", str(tmp_path / "out"),
                           "--memory-limit", "lots"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "key `memory_limit`: Value error, memory_limit: 'lots' is not a size" in done.stderr


def test_custom_steps_get_the_job_seed_unless_they_set_one(tmp_path):
    """A built-in stage run again under another name gets job.seed as the built-in does; a
    seed in its own options wins."""
    path = write(tmp_path, '[job]\ninput = "."\nseed = 7\n[dedup]\n'
                 '[[custom]]\nuse = "dedup"\nname = "dedup_again"\n'
                 '[[custom]]\nuse = "split"\nname = "split_own"\noptions = { seed = 3 }\n')
    job = Job.load(path)
    assert job.options("dedup").seed == 7
    assert job.step("dedup_again").options.seed == 7
    assert job.step("split_own").options.seed == 3
