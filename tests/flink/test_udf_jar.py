"""infra/udf_jar.py: the job's Java functions compile against PyFlink's jars and are rebuilt on change."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from infra import udf_jar as udf
from infra.errors import StackError
from infra.settings import StackSettings
from jobs.config import load_stack
from jobs.flink import sql


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    copy = tmp_path / "src"
    shutil.copytree(udf.SOURCE_DIR, copy)
    return copy


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    return replace(load_stack({}), jar_cache=tmp_path / "cache")


def test_every_registered_function_is_compiled_into_the_jar(sources: Path, settings: StackSettings) -> None:
    jar = udf.udf_jar(settings, sources)
    with zipfile.ZipFile(jar) as archive:
        names = set(archive.namelist())
    for java_class in sql.FUNCTIONS.values():
        assert java_class.replace(".", "/") + ".class" in names
    assert udf.udf_jar(settings, sources) == jar  # cached: same sources, same jar


def test_a_changed_source_builds_a_new_jar(sources: Path, settings: StackSettings) -> None:
    first = udf.udf_jar(settings, sources)
    java = next(sources.rglob("EventMillis.java"))
    java.write_text(java.read_text() + "\n// changed\n")
    second = udf.udf_jar(settings, sources)
    assert second != first and second.exists()


def test_a_compile_error_names_the_sources_and_the_error(sources: Path, settings: StackSettings) -> None:
    java = next(sources.rglob("EventMillis.java"))
    java.write_text(java.read_text().replace("return millis(text);", "return millis(text)"))
    with pytest.raises(StackError, match=r"compiling the Java UDFs in .*src failed:(.|\n)*expected"):
        udf.udf_jar(settings, sources)
    assert not list((settings.jar_cache / "metering-udfs").glob("*.jar"))  # nothing half-built left behind


def test_without_a_jdk_the_error_says_what_to_install(
    sources: Path, settings: StackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)  # the module infra.udf_jar looks javac up with
    with pytest.raises(StackError, match=r"javac not found(.|\n)*openjdk-17-jdk-headless"):
        udf.udf_jar(settings, sources)


def test_a_prebuilt_jar_is_used_as_is_and_a_missing_one_is_an_error(
    tmp_path: Path, sources: Path, settings: StackSettings
) -> None:
    prebuilt = tmp_path / "image" / "metering-udfs.jar"
    prebuilt.parent.mkdir()
    prebuilt.write_bytes(b"PK")
    image = load_stack({"METERING__STACK__UDF_JAR": str(prebuilt)})  # as infra/deploy.py's image sets it
    assert udf.udf_jar(image, sources) == prebuilt
    with pytest.raises(StackError, match=r"stack\.udf_jar=.*absent\.jar is not a file"):
        udf.udf_jar(replace(settings, udf_jar=tmp_path / "absent.jar"), sources)
