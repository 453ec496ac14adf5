"""Copy the part of the recorded reference fixture that the tests read into tests/fixtures/.

The full fixture lives in ../shared/fixtures/videochat_flash_original (26 MB of arrays). A
fresh clone without ../shared runs the tests on this subset: the tiny model folder, the
JSON facts, and only the arrays listed in KEYS (large ones sliced, see SLICES).

    python tools/make_test_fixtures.py [--name videochat_flash|videoxl] [--src DIR] [--dst DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KEYS = [
    # prompt and preprocessing
    "prompt16/input_ids",
    "preprocess/pixel_values16_frame0",
    "preprocess/resize_raw_uint8",
    "preprocess/resize_pixel_values",
    # vision tower, ToMe, projector
    "L4/vit_pos_embed",
    "L8/vit_pos_embed",
    "L4/vit_out",
    "L4/tome_out",
    "L4/tome_assign",
    "L8/vit_out_clip0",
    "L8/tome_out",
    "L8/tome_assign",
    "L4/proj_out",
    # LLM, LP-Comp, decoding
    "L4/inputs_embeds",
    "L4/base/logits",
    "L4/base/greedy_ids",
    "L4/base/evalstyle_ids",
    "L4/base/decode_position_ids",
    "L4/lp/logits",
    "L4/lp/last_logits",
    "L4/lp/layer_seq_len",
    "L4/lp/layer_tokens_per_frame",
    "L8/lp/layer_seq_len",
    "L4/lp/greedy_ids",
    "L4/lp/evalstyle_ids",
    "L4/lp/decode_position_ids",
    "L4/lp/layer_input_last_hidden",
    "L4trunc4/base/last_logits",
    "L4trunc4/lp/last_logits",
    "L4trunc4/lp/layer_seq_len",
    # QC-Comp
    "qc128/input_ids",
    "qc128/clip_scores",
    "qc128/layer_input_hidden_L0",
    "qc128/layer_input_hidden_L12",
    "qc128/layer_input_hidden_L24",
    "qcfull/segment_starts",
    "qcfull/segment_clip_scores",
    "qcfull/frame_score",
    "qcfull/selected_idx",
]
# Arrays kept only in part: key → slice of the leading axis.
SLICES = {"L4/vit_out": slice(0, 1)}

# Video-XL (../shared/fixtures/videoxl_original): every array tests/test_video_xl.py reads.
_TAGS = ("main", "second")
VIDEOXL_KEYS = [
    "video/frames_uint8", "video/frame_idx", "preprocess/pixel_values", "vision/vit_features",
    "vision/projector_out", "vision/pooled", "vision/image_features", "prompt/input_ids",
    "prompt/expanded_input_ids", "loader/embed_tokens_new_row", "loader/lm_head_new_row", "main/evalstyle_ids",
    *(f"{t}/{k}" for t in _TAGS for k in (
        "step_lengths", "step_input_ids", "step_beacon_indices", "step_position_ids", "step_mem_len", "step_mem_after",
        "step_beacon_size", "step_ratio", "window_ratios", "memory_sizes", "inputs_embeds", "memory_keys",
        "memory_values", "final_norm_hidden_text", "logits_text", "last_logits", "greedy_ids", "greedy_step_logits",
        "decode_position_ids", "decode_mem_len")),
    *(f"mix/{k}" for k in ("window_ratios", "memory_sizes", "last_logits", "greedy_window_ratios", "greedy_ids",
                           "greedy_step_logits", "decode_position_ids", "decode_mem_len")),
    "mix2/window_ratios", "mix2/memory_sizes", "mix2/last_logits",
]
VIDEOXL_PRO_KEYS = [
    "video/frames_uint8", "video/frame_idx", "preprocess/resized_uint8_frame0", "preprocess/pixel_values_mean",
    "preprocess/pixel_values_abs_sum", "prompt/input_ids", "prompt/time_embedding", "vision/vit_features",
    "vision/interpolated", "vision/pad_repeat_counts", "dts/layer0_out_group0", "dts/layer1_out_group0",
    "dts/layer2_out_group0", "dts/output", "vision/projector_out", "vision/pooled", "selector/visual_seq",
    "selector/text_ids", "selector/text_feat", "selector/wtta_out", "selector/scores", "selector/rotary_out",
    "selector/kept_visual_positions", "selector/drop_rate", "alt/drop_rate", "alt/kept_visual_positions",
    "alt/last_logits", "llm/inputs_embeds", "llm/final_norm_hidden", "llm/logits_suffix", "llm/last_logits",
    "greedy/ids", "greedy/step_logits",
]
# Video-XL-2: the front end (tests/test_dts_frontend.py) and the LLM side (tests/test_video_xl2_*.py).
VIDEOXL2_KEYS = [
    "common/frames_uint8", "common/frame_idx", "common/timestamps", "common/time_embedding", "common/input_ids",
    "common/pooled", "common/inputs_embeds",
    "w_chunk/prefill_mask_packed", "bilevel/prefill_mask_packed", "bilevel/suffix_position_ids",
    "bilevel/prefill_k_layer0", "bilevel/prefill_v_layer0", "bilevel/mixed_keys", "bilevel/mixed_values",
    *(f"{m}/{k}" for m in ("pure", "w_chunk", "bilevel")
      for k in ("logits_suffix", "greedy_step_logits", "greedy_ids", "decode_position_ids")),
]
# name → (source folder under ../shared/fixtures, keys, slices)
FIXTURES = {
    "videochat_flash": ("videochat_flash_original", KEYS, SLICES),
    "videoxl": ("videoxl_original", VIDEOXL_KEYS, {}),
    "videoxl_pro": ("videoxl_pro_original", VIDEOXL_PRO_KEYS, {}),
    "videoxl2": ("videoxl2_original", VIDEOXL2_KEYS, {}),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="videochat_flash", choices=sorted(FIXTURES))
    ap.add_argument("--src", default=None, help="default: ../shared/fixtures/<name>_original")
    ap.add_argument("--dst", default=None, help="default: tests/fixtures/<name>_original")
    args = ap.parse_args(argv)
    folder, keys, slices = FIXTURES[args.name]
    src = args.src or os.path.join(ROOT, "..", "shared", "fixtures", folder)
    dst = args.dst or os.path.join(ROOT, "tests", "fixtures", folder)
    model = f"tiny_{args.name}"
    npz = os.path.join(src, f"{model}_ref.npz")
    if not os.path.isfile(npz):
        print(f"make_test_fixtures: {npz} not found", file=sys.stderr)
        return 1
    os.makedirs(dst, exist_ok=True)
    shutil.copytree(os.path.join(src, model), os.path.join(dst, model), dirs_exist_ok=True)
    shutil.copy2(os.path.join(src, f"{model}_ref.json"), dst)
    ref = np.load(npz)
    subset = {k: ref[k][slices[k]] if k in slices else ref[k] for k in keys}
    out = os.path.join(dst, f"{model}_ref_subset.npz")
    np.savez_compressed(out, **subset)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB, {len(subset)} arrays)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
