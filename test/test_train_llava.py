"""Algorithm 1 on LLaVA-format data: multi-turn conversations through the chat template, images of mixed sizes in one
batch, gradient accumulation, gradient checkpointing, mixed precision, the data sources of ``data:``."""

from __future__ import annotations

import json

import pytest
import torch

from tofc_ros.backbones.answer_scoring import PromptCache, answer_logits, answer_token_stats
from tofc_ros.data import convert
from tofc_ros.data.llava_format import load_llava
from tofc_ros.train.common import _from_dict
from tofc_ros.train.pretrain import TinyModelConfig, build_tiny_ov
from tofc_ros.train.tofc import TofcTrainConfig, TofcTrainer, load_train_items, micro_batches

TINY = TinyModelConfig(
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    vision_mlp=64,
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    text_kv_heads=1,
    text_mlp=64,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_ov")
    build_tiny_ov(TINY, seed=0).save(out)
    return out


@pytest.fixture(scope="module")
def llava_json(tmp_path_factory):
    """easy-vqa (64x64: 2 tiles) and scenes (640x480: 5 tiles) in one LLaVA JSON, multi-turn records."""
    out = tmp_path_factory.mktemp("llava")
    easy = convert.to_llava(convert.load_items("easyvqa", "train", limit=12), out, source="easyvqa", max_turns=3)
    scenes = convert.to_llava(
        convert.load_items("scenes", "train", images=1, sizes=[(640, 480)]), out, source="scenes", name="scenes"
    )
    records = json.loads(easy.read_text()) + json.loads(scenes.read_text())
    records = [records[0], records[-1], *records[1:-1]]  # a mixed-size first batch
    path = out / "mixed.json"
    path.write_text(json.dumps(records))
    return path


def _cfg(tiny_dir, out, llava_json=None, **kw):
    base = dict(
        model=str(tiny_dir),
        out=str(out),
        steps=4,
        batch_images=1,
        lam=1e-3,
        n_c=4,
        threads=1,
        log_every=1,
        checkpoint_every=0,
        save_merged=False,
        warmup_steps=1,
        codec={"n_e": 4},
        lora={"r": 2},
    )
    if llava_json is not None:
        base.update(data="llava", llava={"path": str(llava_json)})
    base.update(kw)
    return _from_dict(TofcTrainConfig, base)


def _grads(trainer):
    return {n: p.grad.detach().clone() for n, p in trainer._named_param_list() if p.grad is not None}


def test_data_sources_and_config_errors(tiny_dir, tmp_path, llava_json):
    items = load_train_items(_cfg(tiny_dir, tmp_path, llava_json))
    assert {it.rgb().shape[:2] for it in items} == {(64, 64), (480, 640)}
    assert all(it.dialogue for it in items) and max(len(it.questions) for it in items) > 1
    scenes = load_train_items(_cfg(tiny_dir, tmp_path, data="scenes", scenes={"train_images": 2}, train_limit=5))
    assert len(scenes) == 1 and len(scenes[0].questions) == 5
    with pytest.raises(ValueError, match="needs llava.path"):
        _cfg(tiny_dir, tmp_path, data="llava")
    with pytest.raises(ValueError, match="data must be one of"):
        _cfg(tiny_dir, tmp_path, data="coco")
    with pytest.raises(ValueError, match="set mixed_precision"):
        _cfg(tiny_dir, tmp_path, dtype="bf16")
    with pytest.raises(ValueError, match="multiple of processes × grad_accum = 1 × 2"):
        TofcTrainer(_cfg(tiny_dir, tmp_path, batch_images=3, grad_accum=2))


def test_micro_batches_are_disjoint_and_cover_the_step():
    idx = list(range(100, 112))
    for processes, accum in ((1, 1), (2, 1), (2, 3), (3, 2), (4, 3)):
        parts = [micro_batches(idx, processes, r, accum) for r in range(processes)]
        flat = [i for p in parts for mb in p for i in mb]
        assert sorted(flat) == idx and all(len(p) == accum for p in parts)
        # micro-step j over all processes is the j-th contiguous block of the step
        for j in range(accum):
            block = [i for p in parts for i in p[j]]
            assert block == idx[j * 12 // accum : (j + 1) * 12 // accum]
    with pytest.raises(ValueError, match="multiple"):
        micro_batches(idx, 5, 0, 1)


def test_conversation_turns_through_the_chat_template(tiny_dir):
    from tofc_ros.train.llava import TrainableLlava

    server = TrainableLlava.from_pretrained(tiny_dir).server
    turns = [("what shape is it?", "circle"), ("is it red?", "no"), ("what color?", "blue")]
    conv = server.conversation_ids(turns, 3)
    tok = server.tokenizer
    # The Qwen2-style template emits the EOS (<|im_end|>) after each answer: our ids are the template's own text.
    messages = []
    for k, (q, a) in enumerate(turns):
        content = [{"type": "image"}] if k == 0 else []
        messages.append({"role": "user", "content": [*content, {"type": "text", "text": q}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    text = tok.apply_chat_template(messages, tokenize=False).replace("<image>", "<image>" * 3)
    whole = tok(text, add_special_tokens=False)["input_ids"]
    assert conv.input_ids.tolist() == whole[: conv.input_ids.numel()]
    assert tok.decode(conv.labels[conv.labels >= 0]) == "circle<|im_end|>no<|im_end|>blue<|im_end|>"
    assert sorted(set(conv.turns.tolist())) == [-1, 0, 1, 2]
    # The prompt of turn k holds the earlier turns; a single turn is the serving prompt + answer + EOS.
    last = conv.turns.tolist().index(2)
    assert server.prompt_ids("what color?", 3, history=turns[:2]).tolist() == conv.input_ids[:last].tolist()
    single = server.conversation_ids([turns[0]], 3)
    ans = tok("circle", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert single.input_ids.tolist() == server.prompt_ids("what shape is it?", 3).tolist() + ans
    with pytest.raises(ValueError, match="only the last turn may be unanswered"):
        server.conversation_ids([("a", None), ("b", "c")], 3)


# A template whose finished assistant turn differs from its generation prompt ("assistant " + "\n" + text against
# "assistant\n"), as llava-onevision-hf's does; no newline between turns.
QUIRKY_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' }}"
    "{% for p in m['content'] if p['type'] == 'image' %}{{ '<image>' }}{% endfor %}"
    "{% for p in m['content'] if p['type'] == 'text' %}{{ '\\n' + p['text'] }}{% endfor %}{{ '<|im_end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_answers_follow_the_generation_prompt_whatever_the_template_renders(tiny_dir):
    from tofc_ros.train.llava import TrainableLlava

    server = TrainableLlava.from_pretrained(tiny_dir).server
    server.tokenizer.chat_template = QUIRKY_TEMPLATE
    tok = server.tokenizer
    conv = server.conversation_ids([("q one?", "red"), ("q two?", "blue")], 2)

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    eos = [tok.convert_tokens_to_ids("<|im_end|>")]
    expected = (
        ids("<|im_start|>user <image><image>\nq one?<|im_end|><|im_start|>assistant\n")
        + ids("red")
        + eos
        + ids("<|im_start|>user \nq two?<|im_end|><|im_start|>assistant\n")
        + ids("blue")
        + eos
    )
    assert conv.input_ids.tolist() == expected
    assert tok.decode(conv.labels[conv.labels >= 0]) == "red<|im_end|>blue<|im_end|>"
    second = conv.turns.tolist().index(1)
    assert server.prompt_ids("q two?", 2, history=[("q one?", "red")]).tolist() == expected[:second]


@torch.no_grad()
def test_dialogue_scores_and_whole_sequences_match_the_serving_path(tiny_dir):
    """Per turn, the teacher-forced logits equal ``prepare_inputs(question, answer, history)`` run alone; rows of
    different image sizes give the same logits shared-prefix or as padded whole sequences."""
    from tofc_ros.train.llava import TrainableLlava

    server = TrainableLlava.from_pretrained(tiny_dir).server
    g = torch.Generator().manual_seed(0)
    sizes = [((1, 1), (64, 64), 2), ((2, 2), (480, 640), 5), ((1, 1), (64, 64), 2)]
    feats = [torch.randn(t, 4, 32, generator=g) for _, _, t in sizes]
    embeds = [server.image_embeddings(f, grid, size) for f, (grid, size, _) in zip(feats, sizes)]
    questions = [("what shape is it?", "is it red?"), ("how many shapes are there?",), ("what color?", "is it blue?")]
    answers = [("circle", "no"), ("2",), ("red", "yes")]
    dialogue = [True, False, False]
    prompts = PromptCache(server)
    shared = answer_logits(server, prompts, embeds, questions, answers, dialogue=dialogue)
    whole = answer_logits(server, prompts, embeds, questions, answers, dialogue=dialogue, share_prefix=False)
    assert torch.equal(shared.targets, whole.targets) and torch.equal(shared.segments, whole.segments)
    scored = shared.targets != -100
    torch.testing.assert_close(shared.logits[scored], whole.logits[scored], rtol=1e-4, atol=1e-5)
    assert shared.rows.tolist() == [0, 0, 1, 2, 3] and shared.turns.tolist() == [0, 1, 0, 0, 0]
    # Turn 1 of the dialogue, alone through the serving path, with turn 0 as history.
    grid, size, _ = sizes[0]
    alone = server.prepare_inputs(feats[0], grid, size, "is it red?", "no", history=[("what shape is it?", "circle")])
    ref = server.forward_embeds(alone.inputs_embeds)
    ref_pos = (alone.labels != -100).nonzero()[:, 0] - 1  # position j predicts token j+1
    mine = (shared.segments[0] == 1).nonzero()[:, 0]
    torch.testing.assert_close(shared.logits[0, mine], ref[ref_pos], rtol=1e-4, atol=1e-5)
    _, n, hit = answer_token_stats(shared)
    assert n == int(scored.sum()) and hit.shape == (5,)
    assert bool(hit[1]) == bool((ref[ref_pos].argmax(-1) == alone.labels[ref_pos + 1]).all())


def test_batched_step_equals_per_sample_losses(tiny_dir, tmp_path, llava_json):
    """A batch of mixed-size images and multi-turn records: D is the token-weighted mean of the samples' losses, R
    their mean, and the batch's gradient the sum of the samples' gradients (same normalisers)."""
    tr = TofcTrainer(_cfg(tiny_dir, tmp_path, llava_json, batch_images=3, balance_weight=0.0))
    batch = tr.train[:3]
    assert len({it.rgb().shape for it in batch}) == 2
    norm = {"tokens": tr._scored_tokens(batch), "images": 3, "rate": 3, "micro": 1, "full_tokens": 1.0}
    tr.opt.zero_grad(set_to_none=True)
    terms = tr.loss_terms(batch, 2.0, norm)
    terms["loss"].backward()
    batched = _grads(tr)
    per = []
    tr.opt.zero_grad(set_to_none=True)
    for item in batch:
        t = tr.loss_terms([item], 2.0, norm)
        t["loss"].backward()
        per.append(t)
    summed = _grads(tr)
    assert terms["_tokens"] == sum(t["_tokens"] for t in per) == norm["tokens"]
    d = sum(float(t["_ce"]) for t in per) / norm["tokens"]
    assert float(terms["D"]) == pytest.approx(d, rel=1e-5)
    assert float(terms["R"]) == pytest.approx(sum(float(t["R"]) for t in per) / 3, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(sum(float(t["loss"]) for t in per), rel=1e-5)
    assert batched.keys() == summed.keys()
    for name in batched:
        torch.testing.assert_close(batched[name], summed[name], rtol=1e-4, atol=1e-6, msg=name)


def test_accumulation_and_checkpointing_take_the_same_step(tiny_dir, tmp_path, llava_json):
    common = dict(batch_images=3, balance_weight=0.0, steps=2, warmup_steps=0, lr=1e-2, codec_lr=1e-2)
    runs = {
        "plain": _cfg(tiny_dir, tmp_path / "a", llava_json, **common),
        "accum": _cfg(tiny_dir, tmp_path / "b", llava_json, grad_accum=3, **common),
        "ckpt": _cfg(tiny_dir, tmp_path / "c", llava_json, gradient_checkpointing=True, **common),
    }
    states, recs = {}, {}
    for name, cfg in runs.items():
        tr = TofcTrainer(cfg)
        assert tr.llava.model.is_gradient_checkpointing == (name == "ckpt")
        recs[name] = tr.train_step()
        states[name] = tr._trainable_state()
    for name in ("accum", "ckpt"):
        assert recs[name]["D"] == pytest.approx(recs["plain"]["D"], rel=1e-5)
        assert recs[name]["R"] == pytest.approx(recs["plain"]["R"], rel=1e-5)
        for key, value in states["plain"].items():
            torch.testing.assert_close(states[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")


@pytest.mark.parametrize(("dtype", "mp"), [("fp32", "bf16"), ("bf16", "bf16"), ("fp32", "fp16")])
def test_mixed_precision_steps(tiny_dir, tmp_path, llava_json, dtype, mp):
    tr = TofcTrainer(_cfg(tiny_dir, tmp_path, llava_json, batch_images=2, dtype=dtype, mixed_precision=mp))
    assert all(p.dtype == torch.float32 for p in tr.model_params + tr.codec_main + tr.aux_params)
    before = {k: v.clone() for k, v in tr._trainable_state().items()}
    rec = tr.train_step()
    assert all(torch.isfinite(torch.tensor([rec["loss"], rec["D"], rec["R"]])))
    after = tr._trainable_state()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if mp == "fp16":
        ck = tr.save_checkpoint()
        assert json.loads((ck / "state.json").read_text())["scaler"]["scale"] > 0


def test_llava_run_exports_and_loads(tiny_dir, tmp_path, llava_json):
    data = load_llava(llava_json)
    cfg = _cfg(tiny_dir, tmp_path, llava_json, steps=2, batch_images=2, save_merged=True)
    summary = TofcTrainer(cfg).run(progress=False)
    assert summary["replicas"] == {"processes": 1, "identical": True, "digests": summary["replicas"]["digests"]}
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "codec.safetensors").is_file()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(0 <= r["acc"] <= 1 for r in log)
    assert len(data.items) == len(TofcTrainer(cfg).train)


def test_rate_per_coded_value(tiny_dir, tmp_path, llava_json):
    """rate_unit: element: R is bits per coded value, counted from the images' sizes before the forward pass."""
    tr = TofcTrainer(_cfg(tiny_dir, tmp_path, llava_json, batch_images=3, rate_unit="element", lam=0.5))
    batch = tr.train[:3]
    terms = tr.loss_terms(batch, 2.0)
    values = sum(tr._coded_values(it) for it in batch)
    assert terms["_elements"] == values == (2 + 5 + 2) * 4 * 32  # tiles × n_c × d: 64x64, 640x480, 64x64
    assert float(terms["R"]) == pytest.approx(float(terms["_bits"]) / values, rel=1e-6)
    expected = terms["D"] + 0.5 * terms["R"] + tr.cfg.balance_weight * terms["balance"]
    assert float(terms["loss"]) == pytest.approx(float(expected), rel=1e-5)
    rec = tr.train_step()
    assert rec["R"] < 64 < rec["bits_per_image"]  # a few bits per value; hundreds per image
    with pytest.raises(ValueError, match="rate_unit must be one of"):
        _cfg(tiny_dir, tmp_path, rate_unit="token")
