from pathlib import Path

import pytest

from trainguard.agents.config_loader import load_agent_config
from trainguard.errors import ConfigError

TOML = """
cluster = "research-a"
node = "gpu-17"
backend = "simulated"
interval_s = 0.5

[kafka]
bootstrap = "kafka-1:9092,kafka-2:9092"
compression = "lz4"
topic_prefix = "prod"

[spool]
dir = "/var/lib/tg/spool"
max_mb = 64

[steps]
socket = "/run/tg/steps.sock"
socket_mode = "0666"
files = ["/var/log/a.jsonl", "/var/log/b.jsonl"]
"""


def _write(tmp_path, text):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_every_file_setting_reaches_the_config(tmp_path):
    config = load_agent_config(_write(tmp_path, TOML), {})
    assert (config.cluster, config.node, config.backend, config.interval_s) == (
        "research-a", "gpu-17", "simulated", 0.5)
    assert config.kafka.bootstrap == "kafka-1:9092,kafka-2:9092"
    assert config.kafka.compression == "lz4"
    assert config.topics.samples == "prod.gpu-samples.v1"
    assert config.spool_dir == Path("/var/lib/tg/spool") and config.spool_max_bytes == 64 << 20
    assert config.steps_socket == Path("/run/tg/steps.sock") and config.steps_socket_mode == 0o666
    assert config.steps_files == (Path("/var/log/a.jsonl"), Path("/var/log/b.jsonl"))


def test_environment_overrides_the_file_and_flags_override_both(tmp_path):
    env = {"TRAINGUARD_CLUSTER": "from-env", "TRAINGUARD_INTERVAL_S": "2",
           "TRAINGUARD_BOOTSTRAP_SERVERS": "env:9092"}
    config = load_agent_config(_write(tmp_path, TOML), env, {"cluster": "from-flag",
                                                             "interval_s": None})
    assert config.cluster == "from-flag"
    assert config.interval_s == 2.0
    assert config.kafka.bootstrap == "env:9092"


def test_defaults_without_a_file_use_the_nvml_backend():
    config = load_agent_config(None, {})
    assert config.backend == "nvml" and config.interval_s == 1.0
    assert config.steps_socket_mode == 0o660 and config.steps_socket_group is None


def test_the_steps_socket_group_reaches_the_config(tmp_path):
    text = TOML.replace('socket_mode = "0666"', 'socket_mode = "0660"\nsocket_group = "trainers"')
    config = load_agent_config(_write(tmp_path, text), {})
    assert (config.steps_socket_mode, config.steps_socket_group) == (0o660, "trainers")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("intervall_s = 1.0\n", "unknown field `intervall_s`"),
        ("[kafka]\ncompression = 'zsdt'\n", "zsdt"),
        ("interval_s = 0.01\n", "interval_s must be within 0.1..3600, got 0.01"),
        ("backend = 'cuda'\n", "unknown backend 'cuda'"),
        ("[steps]\nsocket_mode = 'rw'\n", "octal"),
        ("[steps]\nsocket_mode = '7777'\n", "steps_socket_mode 7777 is not a permission mode"),
        ("[steps]\nsocket_group = 'a b'\n", "bad steps_socket_group 'a b'"),
        ("interval_s = \n", "not valid TOML"),
    ],
)
def test_bad_files_fail_with_a_message_naming_the_problem(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        load_agent_config(_write(tmp_path, text), {})


def test_bad_environment_value_names_the_setting():
    with pytest.raises(ConfigError, match="interval_s must be a float, got 'fast'"):
        load_agent_config(None, {"TRAINGUARD_INTERVAL_S": "fast"})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read agent config"):
        load_agent_config(tmp_path / "nope.toml", {})


def test_the_witness_settings_reach_the_config(tmp_path):
    text = """
[witness]
checkpoint_dirs = ["/scratch/ckpt"]
code_paths = ["/home/a/train"]
framework_paths = ["/venv/lib/python3.12/site-packages/torch"]
mb_per_s = 50
max_file_mb = 1024
inotify = false
"""
    w = load_agent_config(_write(tmp_path, text), {}).witness
    assert w.enabled and w.checkpoint_dirs == (Path("/scratch/ckpt"),)
    assert w.framework_paths == (Path("/venv/lib/python3.12/site-packages/torch"),)
    assert (w.mb_per_s, w.max_file_bytes, w.inotify) == (50.0, 1024 * 1024 * 1024, False)


def test_the_witness_is_off_by_default_and_refuses_relative_paths(tmp_path):
    assert not load_agent_config(None, {}).witness.enabled
    with pytest.raises(ConfigError, match="witness path 'ckpt' must be absolute"):
        load_agent_config(_write(tmp_path, '[witness]\ncheckpoint_dirs = ["ckpt"]\n'), {})


def test_kafka_security_comes_from_the_file_and_the_password_from_its_file(tmp_path):
    pw = tmp_path / "kafka.password"
    pw.write_text("agent-pw\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    text = TOML.replace('topic_prefix = "prod"\n', 'topic_prefix = "prod"\n'
                        'security_protocol = "SASL_SSL"\nusername = "agent-gpu-17"\n'
                        f'password_file = "{pw}"\nca_file = "{ca}"\n')
    config = load_agent_config(_write(tmp_path, text), {})
    kwargs = config.kafka.producer_kwargs()
    assert (kwargs["security_protocol"], kwargs["sasl_mechanism"],
            kwargs["sasl_plain_username"], kwargs["sasl_plain_password"],
            kwargs["ssl_cafile"]) == ("SASL_SSL", "SCRAM-SHA-512", "agent-gpu-17", "agent-pw",
                                      str(ca))


def test_the_kafka_password_may_come_from_the_environment(tmp_path):
    config = load_agent_config(None, {"TRAINGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                      "TRAINGUARD_KAFKA_USERNAME": "agent",
                                      "TRAINGUARD_KAFKA_PASSWORD": "env-pw"})
    assert config.kafka.security.password == "env-pw"
    assert "env-pw" not in repr(config)


def test_sasl_without_a_password_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no password"):
        load_agent_config(None, {"TRAINGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                 "TRAINGUARD_KAFKA_USERNAME": "agent"})


def test_the_metrics_section_reaches_the_config_and_the_environment_overrides_it(tmp_path):
    path = _write(tmp_path, '[metrics]\ntextfile_dir = "/var/lib/node_exporter/tf"\n'
                            'port = 9465\naddr = "127.0.0.1"\n')
    config = load_agent_config(path, {})
    assert config.metrics_textfile_dir == Path("/var/lib/node_exporter/tf")
    assert (config.metrics_port, config.metrics_addr) == (9465, "127.0.0.1")
    env = {"TRAINGUARD_AGENT_METRICS_PORT": "9500",
           "TRAINGUARD_AGENT_METRICS_TEXTFILE_DIR": "/tmp/tf"}
    config = load_agent_config(path, env)
    assert (config.metrics_port, config.metrics_textfile_dir) == (9500, Path("/tmp/tf"))


def test_metrics_are_off_by_default_and_a_bad_port_is_named(tmp_path):
    config = load_agent_config(None, {})
    assert (config.metrics_textfile_dir, config.metrics_port) == (None, None)
    with pytest.raises(ConfigError, match="metrics.port=70000"):
        load_agent_config(_write(tmp_path, "[metrics]\nport = 70000\n"), {})


def test_the_rank_watch_interval_reaches_the_config_and_is_on_by_default(tmp_path):
    assert load_agent_config(None, {}).rank_watch_interval_s == 0.25
    text = TOML + "rank_watch_interval_s = 0.5\n"
    assert load_agent_config(_write(tmp_path, text), {}).rank_watch_interval_s == 0.5
    off = TOML + "rank_watch_interval_s = 0\n"
    assert load_agent_config(_write(tmp_path, off), {}).rank_watch_interval_s == 0


def test_a_rank_watch_interval_out_of_range_is_named(tmp_path):
    text = TOML + "rank_watch_interval_s = 0.001\n"
    with pytest.raises(ConfigError, match="rank_watch_interval_s must be 0 .off. or within"):
        load_agent_config(_write(tmp_path, text), {})
