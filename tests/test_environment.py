import sys

from llmcourse import environment
from llmcourse.environment import install_command, setup


def test_local_setup_installs_nothing(monkeypatch):
    for var in ("COLAB_RELEASE_TAG", "COLAB_GPU", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(environment, "detect_platform", lambda: "local")
    calls = []
    card = setup(quiet=True, runner=calls.append)
    assert calls == [] and card.platform in ("local", "colab", "kaggle")


def test_colab_and_kaggle_install_the_extras(monkeypatch, capsys):
    for platform in ("colab", "kaggle"):
        monkeypatch.setattr(environment, "detect_platform", lambda p=platform: p)
        calls = []
        setup(quiet=True, runner=calls.append)
        assert calls == [install_command(platform)]
        assert calls[0][:4] == [sys.executable, "-m", "pip", "install"]
        assert "peft" in calls[0] and "bitsandbytes" in calls[0]
        assert f"{platform} detected" in capsys.readouterr().out
