"""The multi-LoRA scheduler without a server: rows with different adapters decode in one
forward and each equals PEFT's greedy ``generate``; slots, versions and refusals of the
engine's adapter table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from djl.adapter_calls import REGISTER, UNREGISTER, UPDATE  # noqa: E402
from djl.runtime.generation.adapters import AdapterTable  # noqa: E402
from djl.runtime.generation.lora import MultiLora  # noqa: E402
from djl.runtime.generation.params import SamplingParams  # noqa: E402
from djl.runtime.generation.scheduler import RollingBatch, Sequence  # noqa: E402

TINYLM = Path(__file__).resolve().parents[2] / "examples" / "tinylm" / "model"
PROMPTS = ["The model server", "Once upon a time there was", "red"]
TOKENS = 10
SPECS = {"a1": (1, 4, ["q_proj", "v_proj"]), "a2": (2, 8, ["o_proj", "down_proj"]),
         "a3": (3, 2, ["k_proj"])}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    if not (TINYLM / "config.json").is_file():
        pytest.skip("examples/tinylm/model is not built: run make install")
    home = tmp_path_factory.mktemp("adapters")
    for name, (seed, rank, targets) in SPECS.items():
        torch.manual_seed(seed)
        base = transformers.AutoModelForCausalLM.from_pretrained(TINYLM)
        config = peft.LoraConfig(r=rank, lora_alpha=3 * rank, target_modules=targets,
                                 init_lora_weights=False, use_rslora=name == "a3")
        peft.get_peft_model(base, config).save_pretrained(home / name)
    return home


@pytest.fixture(scope="module")
def reference(adapters):
    tokenizer = transformers.AutoTokenizer.from_pretrained(TINYLM)
    cache = {}

    def greedy(adapter: str, prompt: str) -> list[int]:
        if (adapter, prompt) not in cache:
            model = transformers.AutoModelForCausalLM.from_pretrained(TINYLM)
            if adapter:
                model = peft.PeftModel.from_pretrained(model, adapters / adapter)
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
            with torch.inference_mode():
                out = model.eval().generate(**ids, max_new_tokens=TOKENS, do_sample=False)
            cache[adapter, prompt] = out[0, ids["input_ids"].shape[1]:].tolist()
        return cache[adapter, prompt]

    greedy.tokenizer = tokenizer
    return greedy


def _engine(max_loras: int):
    model = transformers.AutoModelForCausalLM.from_pretrained(TINYLM).eval()
    lora = MultiLora(model, max_loras)
    return AdapterTable(lora), RollingBatch(model, 32, lora)


def _register(table: AdapterTable, name: str, src: Path, **options: str) -> tuple[int, str]:
    answer = table.operate(0, REGISTER, {"name": name, "src": str(src)}, options)
    assert answer is not None
    return answer


def _run(batch: RollingBatch, seqs: list[Sequence], on_step=None) -> None:
    for seq in seqs:
        batch.add(seq)
    while len(batch):
        made = batch.step()
        if on_step is not None:
            on_step(batch)
        batch.remove([s for s, _, _ in made if len(s.ids) >= TOKENS])


def test_one_forward_serves_every_adapter_and_the_base(adapters, reference):
    table, batch = _engine(max_loras=2)
    for name in SPECS:
        assert _register(table, name, adapters / name) == (200, f"Adapter {name} registered")
    tokenizer = reference.tokenizer
    jobs = [(a, p) for p in PROMPTS for a in ("", *SPECS)]
    seqs = [Sequence(tokenizer(p, add_special_tokens=False)["input_ids"],
                     SamplingParams(max_new_tokens=TOKENS), None, 0,
                     table.select([a])[0]) for a, p in jobs]
    mixes, waited = [], []

    def on_step(b: RollingBatch) -> None:
        mixes.append(len({s.adapter.name if s.adapter else "" for s in b.running}))
        waited.append(len(b.waiting))

    _run(batch, seqs, on_step)
    for (adapter, prompt), seq in zip(jobs, seqs, strict=True):
        assert seq.ids == reference(adapter, prompt), (adapter, prompt)
    # Base and two adapters decoded in the same forwards; the third adapter waited for a
    # slot (two slots) and went once one was free.
    assert max(mixes) == 3
    assert max(waited) > 0
    assert all(a is None or a.users == 0 for a in table.lora.slots)


def test_an_update_is_a_new_version_and_unregister_waits(adapters, reference):
    table, batch = _engine(max_loras=4)
    tokenizer = reference.tokenizer
    ids = tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    _register(table, "x", adapters / "a1")
    old = Sequence(ids, SamplingParams(max_new_tokens=TOKENS), None, 0, table.select(["x"])[0])
    table.hold([old.adapter])
    batch.add(old)
    batch.step()  # "x" (a1) is decoding
    assert table.operate(0, UPDATE, {"name": "x", "src": str(adapters / "a2")}, {}) == (
        200, "Adapter x updated")
    new = Sequence(ids, SamplingParams(max_new_tokens=TOKENS), None, 0, table.select(["x"])[0])
    table.hold([new.adapter])
    assert table.operate(7, UNREGISTER, {"name": "x"}, {}) is None  # requests left
    with pytest.raises(Exception, match="The adapter x has not been registered"):
        table.select(["x"])
    _run(batch, [new])
    assert old.ids == reference("a1", PROMPTS[0])  # the weights it started with
    assert new.ids == reference("a2", PROMPTS[0])
    table.drop([old.adapter])
    assert table.settle() == []
    table.drop([new.adapter])
    assert table.settle() == [(7, (200, "Adapter x unregistered"))]
    assert table.lora.slots == [None] * 4


def test_what_the_table_refuses(adapters, tmp_path):
    table, _ = _engine(max_loras=1)
    assert _register(table, "p", adapters / "a1", pin="true")[0] == 200
    code, message = _register(table, "q", adapters / "a2", pin="true")
    assert (code, message) == (400, "All 1 LoRA slots (option.max_loras) hold pinned adapters")
    assert _register(table, "", adapters / "a1") == (400, "The parameter name is required")
    assert _register(table, "y", tmp_path) == (400, f"No adapter_config.json in {tmp_path}")
    dora = tmp_path / "dora"
    dora.mkdir()
    (dora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA",
                                                          "use_dora": True}))
    assert _register(table, "d", dora) == (400, "DoRA adapters (use_dora) are not supported")
    assert table.operate(0, UPDATE, {"name": "nope"}, {}) == (
        404, "The adapter nope was not found")
    assert AdapterTable(None).operate(0, REGISTER, {"name": "x"}, {}) == (
        400, "LoRA is not enabled.")


def test_preload_false_reads_the_weights_at_first_use(adapters):
    table, _ = _engine(max_loras=2)
    assert _register(table, "lazy", adapters / "a3", preload="false")[0] == 200
    assert table.adapters["lazy"].weights is None
    (adapter,) = table.select(["lazy"])
    assert adapter.weights is not None and adapter.rank == 2
