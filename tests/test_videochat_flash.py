"""End-to-end VideoChat-Flash against the recorded original: loading, splice, answers, export, bad input."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import lvjax
from lvjax.cli import main as cli
from lvjax.config import ConfigError
from lvjax.errors import UsageError
from lvjax.families.base import IMAGE_TOKEN_INDEX, Encoded
from lvjax.families.videochat_flash import answer as runner
from lvjax.families.videochat_flash import model as vcf
from lvjax.prompt import multiple_choice
from lvjax.video import VideoFrames

QUESTION = multiple_choice("What is the person in the video doing?", ["Cooking", "Dancing", "Reading", "Swimming"])
TIME_MSG = "\nThe video lasts for 4.00 seconds, and 16 frames are uniformly sampled from it. "


@pytest.fixture(scope="module")
def model(tiny_vcf_dir):
    return lvjax.load(str(tiny_vcf_dir))


def _encoded(visual) -> Encoded:
    """Visual tokens of a 16-frame, 4-second video as `Encoded` (no bucket padding)."""
    frames = VideoFrames(np.zeros((16, 8, 8, 3), np.uint8), np.arange(16), 4.0, 4.0, 16, TIME_MSG, np.arange(16) / 4)
    return Encoded(visual, frames, {}, n_valid=int(visual.shape[0]))


@pytest.fixture(scope="module")
def encoded(model, ref):
    """The recorded projector output as an encoded 16-frame video (the ViT has its own tests)."""
    return _encoded(jnp.asarray(ref["L4/proj_out"]))


def test_prompt_and_splice_match_original(model, ref):
    prefix, suffix = runner.prompt_ids(model.tokenizer, QUESTION, TIME_MSG, ())
    np.testing.assert_array_equal(prefix + [IMAGE_TOKEN_INDEX] + suffix, ref["prompt16/input_ids"])
    ids, valid = runner.layout(model.generation.pad_token_id, prefix, 256, 256, suffix, len(suffix))
    x = vcf.splice(model.params, model.config, jnp.asarray(ids), jnp.asarray(ref["L4/proj_out"])[None], len(prefix))
    assert valid.all()
    np.testing.assert_array_equal(np.asarray(x)[0], ref["L4/inputs_embeds"])


@pytest.mark.parametrize("compression,key", [  # the base ids are also checked in test_fixture_llm (CI)
    pytest.param("none", "L4/base/evalstyle_ids", marks=pytest.mark.heavy), ("xcomp_cosine", "L4/lp/evalstyle_ids")])
def test_answer_matches_original_eval(model, encoded, ref, compression, key):
    text, report = model.answer_encoded(encoded, QUESTION, compression=compression, max_new_tokens=8)
    want = [int(t) for t in ref[key]]
    assert report["token_ids"] == want[: len(report["token_ids"])]
    assert text == model.tokenizer.decode(ref[key], skip_special_tokens=True).strip()
    assert report["visual_tokens"] == 256 and report["prompt_tokens"] == 335
    want_lens = ref["L4/lp/layer_seq_len"] if compression == "xcomp_cosine" else [335] * 28
    np.testing.assert_array_equal(report["layer_seq_len"], want_lens)
    again, _ = model.answer_encoded(encoded, QUESTION, compression=compression, max_new_tokens=8)  # cached prefix
    assert again == text


@pytest.mark.heavy  # CI time
@pytest.mark.parametrize("compression", ["none", "xcomp_cosine"])
def test_jitted_answer_equals_unjitted_steps(model, encoded, compression):
    """The jitted path against the same functions run op by op (jax.disable_jit: Python decode loop)."""
    fresh = _encoded(encoded.visual)
    jitted, _ = model.answer_encoded(fresh, QUESTION, compression=compression, max_new_tokens=2)
    with jax.disable_jit():
        stepwise, _ = model.answer_encoded(fresh, QUESTION, compression=compression, max_new_tokens=2)
    assert jitted == stepwise


def test_encode_frames_matches_original(model, ref):
    video = np.random.RandomState(1029).randint(0, 256, (16, 448, 448, 3), np.uint8)[:4]
    visual, n_valid, seconds, stages = runner.encode_frames(model.params, model.config, video, clip_len=4,
                                                            bucketed=False, intermediates=True)
    assert set(seconds) == {"vision", "merge"} and n_valid == 64
    assert set(stages) == {"pixels", "vision", "merge_assign", "merged", "projector"}
    np.testing.assert_allclose(np.asarray(visual), ref["L4/proj_out"][:64], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(stages["merge_assign"])[0], ref["L4/tome_assign"][0])


def test_convert_export_round_trip(tiny_vcf_dir, tmp_path):
    assert cli(["convert", "--from-hf", str(tiny_vcf_dir), "--out", str(tmp_path / "ckpt"), "--quiet"]) == 0
    assert cli(["export", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back")]) == 0
    a = load_file(str(tiny_vcf_dir / "model.safetensors"))
    b = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == json.loads((tiny_vcf_dir / "config.json").read_text())
    for name in ("tokenizer.json", "generation_config.json"):
        assert (tmp_path / "back" / name).read_bytes() == (tiny_vcf_dir / name).read_bytes()
    again = lvjax.load(str(tmp_path / "ckpt"))
    flat = lambda t: jax.tree.leaves(t)  # noqa: E731
    assert all(np.array_equal(x, y) for x, y in zip(flat(again.params), flat(lvjax.load(str(tiny_vcf_dir)).params)))


def test_xcomp_training_format_loads(tiny_vcf_dir, tmp_path):
    src = tmp_path / "xcomp"
    shutil.copytree(tiny_vcf_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(architectures=["LlavaQwenForCausalLM"], model_type="qwen2", mm_local_num_frames=8,
               mm_patch_merge_type="flat", mm_newline_position="one_token", image_aspect_ratio="square")
    (src / "config.json").write_text(json.dumps(cfg))
    model = lvjax.load(str(src))
    assert model.config.local_num_frames == 8 and model.family.name == "videochat_flash"


def _edited(tiny_vcf_dir, tmp_path, **fields):
    src = tmp_path / "edited"
    shutil.copytree(tiny_vcf_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(fields)
    (src / "config.json").write_text(json.dumps(cfg))
    return src


@pytest.mark.parametrize("field,value", [("mm_vision_tower", "siglip-so400m"), ("mm_projector_type", "mlp2x_gelu")])
def test_unknown_towers_are_clear_errors(tiny_vcf_dir, tmp_path, capsys, field, value):
    src = _edited(tiny_vcf_dir, tmp_path, **{field: value})
    assert cli(["convert", "--from-hf", str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert field in err and value in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer_and_empty_question(model, encoded, tiny_vcf_dir, tmp_path):
    with pytest.raises(UsageError, match="empty"):  # a question is usage (exit 2), not config
        model.answer_encoded(encoded, "   ")
    src = tmp_path / "notok"
    shutil.copytree(tiny_vcf_dir, src)
    for f in os.listdir(src):
        if f.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            os.remove(src / f)
    with pytest.raises(ConfigError, match="no tokenizer files"):
        lvjax.load(str(src)).answer_encoded(encoded, QUESTION)


def test_unreadable_video_cli(tiny_vcf_dir, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    code = cli(["answer", "--model", str(tiny_vcf_dir), "--video", str(bad), "--question", "What?"])
    err = capsys.readouterr().err
    assert code == 1 and "broken.mp4" in err and "Traceback" not in err


def test_frame_count_padded_to_clip_length(model):
    frames = np.random.RandomState(0).randint(0, 256, (6, 32, 32, 3), np.uint8)
    padded = runner.pad_to_clips(frames, 4)
    assert len(padded) == 8 and (padded[6] == frames[5]).all() and (padded[7] == frames[5]).all()


@pytest.mark.heavy  # CI time (20-minute budget); `make test-all` runs it
def test_single_image_path(model, tmp_path):
    from PIL import Image

    img = np.random.RandomState(3).randint(0, 256, (90, 120, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    text, report = model.answer(str(tmp_path / "x.png"), "What is this?", max_new_tokens=3)
    assert report["frames"] == 1 and report["visual_tokens"] == 16
    prefix, suffix = runner.prompt_ids(model.tokenizer, "What is this?", "", ())
    assert model.tokenizer.decode(suffix).startswith("\nWhat is this?<|im_end|>")
    again, _ = model.answer(img, "What is this?", max_new_tokens=3)
    assert again == text


def test_second_question_same_bucket_does_not_recompile(model, encoded):
    from lvjax.generate import decode_from_cache, extend_cache, prefill_cache

    model.answer_encoded(encoded, "What happens first?", max_new_tokens=2)
    sizes = [f._cache_size() for f in (prefill_cache, extend_cache, decode_from_cache)]
    text, _ = model.answer_encoded(encoded, "Who is there?", max_new_tokens=2)
    assert [f._cache_size() for f in (prefill_cache, extend_cache, decode_from_cache)] == sizes


def test_chat_cli_reads_questions_from_stdin(tmp_path, monkeypatch, capsys):
    """`lvjax chat` on the shipped tiny model (6 layers: CI time; the recorded model's answers are checked above)."""
    import io

    from tests.videos import write_video

    path = write_video(tmp_path / "clip.mp4", 8, fps=4)
    monkeypatch.setattr("sys.stdin", io.StringIO("What is it?\n\nAnd now?\n"))
    code = cli(["chat", "--model", "tiny", "--video", str(path), "--max-frames", "4", "--min-frames", "4",
                "--max-new-tokens", "2", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 2
    assert all(json.loads(line)["report"]["frames"] == 4 for line in out)
