"""The embedders: offline, checked, and quiet about it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ipa.projections.embedders import EmbedderError, load, vectors


def test_loading_wordllama_leaves_the_process_logging_as_it_was() -> None:
    # wordllama calls logging.basicConfig(level=INFO) when imported: ipa's stderr then carried
    # every library's INFO lines (a fresh process, so the import happens here).
    code = ("import logging; from ipa.projections.embedders import load; load(); "
            "root = logging.getLogger(); print(len(root.handlers), root.level)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert shown.stdout.split() == ["0", str(30)]


def test_vectors_are_unit_length_and_the_empty_text_is_a_number() -> None:
    found = vectors(load("wordllama:64"), ["the tests need --no-cov", "", "\udc80"])
    assert found.shape == (3, 64)
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("setting", "named"), [
    ("wordllama:7", "64, 128 or 256"), ("wordllama:x", "takes a number"),
    ("galaxy", "unknown IPA_EMBEDDER"), ("python:no_such_module:f", "no_such_module"),
    ("python:json:dumps", "did not"),
])
def test_a_setting_that_names_no_embedder_is_refused_naming_it(setting: str, named: str):
    with pytest.raises(EmbedderError, match=named):
        load(setting)
