"""The train-step benchmark replaces its own section of docs/benchmarks.md and keeps the others."""

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("train_step_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_section_replaced_others_kept(tmp_path):
    benchmark = _benchmark_module()
    path = tmp_path / "benchmarks.md"
    path.write_text(
        "# Benchmarks\n\n## Tokenizer speed\n\ntokenizer table\n\n"
        f"{benchmark.SECTION_TITLE}\n\nold numbers\n\n## Sampling speed\n\nsampling table\n"
    )
    benchmark.write_section(path, f"{benchmark.SECTION_TITLE}\n\nnew numbers\n")
    text = path.read_text()

    assert text.count(benchmark.SECTION_TITLE) == 1
    assert "new numbers" in text
    assert "old numbers" not in text
    assert "## Tokenizer speed\n\ntokenizer table" in text
    assert "## Sampling speed\n\nsampling table" in text


def test_section_appended_to_new_file(tmp_path):
    benchmark = _benchmark_module()
    path = tmp_path / "docs" / "benchmarks.md"
    benchmark.write_section(path, f"{benchmark.SECTION_TITLE}\n\nnumbers\n")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert text.count(benchmark.SECTION_TITLE) == 1
