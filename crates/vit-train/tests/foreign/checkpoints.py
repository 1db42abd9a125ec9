"""Foreign ViT checkpoints for crates/vit-train/tests/foreign.rs.

make DIR: random-weight timm and Hugging Face models (nothing downloaded), each
saved as DIR/<case>/model.safetensors with its logits on fixed inputs.
check CASE_DIR ONNX: onnxruntime on our export must equal the saved logits.
resample OUT_DIR: timm's resample_abs_pos_embed on a fixed tensor.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

TOL = 1e-4


def perturb(model, seed):
    # Random init leaves LayerNorms at 1/0 and biases at 0; noise makes every tensor matter.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def save_case(root, name, model, state, image, channels=3, extra=None):
    from safetensors.torch import save_file

    d = root / name
    d.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "model.safetensors"))
    g = torch.Generator().manual_seed(1)
    for batch in (1, 7):
        x = torch.randn(batch, channels, image, image, generator=g)
        with torch.no_grad():
            out = model(x)
        logits = out.logits if hasattr(out, "logits") else out
        np.save(d / f"input_{batch}.npy", x.numpy())
        np.save(d / f"logits_{batch}.npy", logits.numpy())
    if extra:
        (d / "case.json").write_text(json.dumps(extra))


def make(root):
    import timm
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    for pool in ("token", "avg"):
        m = perturb(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, global_pool=pool), 2)
        save_case(root, f"timm_tiny_{pool}", m, m.state_dict(), 224, extra={"num_heads": None})
        m = perturb(VisionTransformer(img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                                      num_classes=3, global_pool=pool), 3)
        save_case(root, f"timm_custom_{pool}", m, m.state_dict(), 64, extra={"num_heads": 4})
    # timm's options beyond the plain ViT: LayerScale (init_values) with norm_pre, and no class token.
    custom = dict(img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=3)
    m = perturb(VisionTransformer(init_values=0.1, pre_norm=True, **custom), 6)
    save_case(root, "timm_custom_ls_prenorm", m, m.state_dict(), 64, extra={"num_heads": 4})
    m = perturb(VisionTransformer(class_token=False, global_pool="avg", init_values=0.1, **custom), 7)
    save_case(root, "timm_custom_nocls", m, m.state_dict(), 64, extra={"num_heads": 4})

    from transformers import ViTConfig, ViTForImageClassification

    labels = ["ant", "bee", "cat", "dog"]
    cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                    image_size=32, patch_size=8, num_labels=4, id2label=dict(enumerate(labels)),
                    label2id={l: i for i, l in enumerate(labels)})
    m = perturb(ViTForImageClassification(cfg), 4)
    d = root / "hf"
    m.save_pretrained(str(d), safe_serialization=True)
    g = torch.Generator().manual_seed(1)
    for batch in (1, 7):
        x = torch.randn(batch, 3, 32, 32, generator=g)
        with torch.no_grad():
            np.save(d / f"logits_{batch}.npy", m(pixel_values=x).logits.numpy())
        np.save(d / f"input_{batch}.npy", x.numpy())

    # Checkpoints our ViT must refuse, each naming the tensor at fault.
    from safetensors.torch import save_file

    def bad(name, state):
        (root / name).mkdir()
        save_file({k: v.contiguous() for k, v in state.items()}, str(root / name / "model.safetensors"))

    small = dict(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4, num_classes=3)
    bad("no_embed_class", VisionTransformer(no_embed_class=True, **small).state_dict())
    s = VisionTransformer(init_values=1e-5, **small).state_dict()
    del s["blocks.0.ls2.gamma"]
    bad("half_layer_scale", s)
    s = VisionTransformer(**small).state_dict()
    s["blocks.0.extra.weight"] = torch.zeros(3)
    bad("unknown", s)
    s = VisionTransformer(**small).state_dict()
    s["head.bias"] = torch.zeros(4)
    bad("head_shape", s)


def check(case, onnx):
    import onnxruntime as ort
    from transformers import AutoConfig, ViTImageProcessor

    # The files beside the ONNX load with transformers' usual loaders.
    folder = Path(onnx).parent
    config = AutoConfig.from_pretrained(folder)
    processor = ViTImageProcessor.from_pretrained(folder)
    image = np.zeros((5, 9, 3), dtype=np.uint8)
    size = processor(images=image, return_tensors="np")["pixel_values"].shape[-1]
    assert size == config.image_size, (size, config.image_size)

    sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for batch in (1, 7):
        x = np.load(case / f"input_{batch}.npy")
        want = np.load(case / f"logits_{batch}.npy")
        got = sess.run(None, {name: x})[0]
        diff = float(np.abs(got - want).max())
        print(f"{case.name} batch {batch}: max |onnx - torch| = {diff:.2e}")
        if got.shape != want.shape or not diff <= TOL:
            sys.exit(f"{case.name} batch {batch}: shape {got.shape} vs {want.shape}, max diff {diff}")


def resample(out):
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    g = torch.Generator().manual_seed(5)
    pos = torch.randn(1, 1 + 4 * 4, 8, generator=g)
    want = resample_abs_pos_embed(pos, new_size=(7, 7), old_size=(4, 4), num_prefix_tokens=1)
    # Without a class token (timm class_token=False) every position is on the grid.
    grid_only = pos[:, 1:].clone()
    want_grid = resample_abs_pos_embed(grid_only, new_size=(7, 7), old_size=(4, 4), num_prefix_tokens=0)
    save_file({"pos_embed": pos, "resampled": want.contiguous(), "grid_only": grid_only.contiguous(),
               "grid_only_resampled": want_grid.contiguous()}, str(out / "resample.safetensors"))


if __name__ == "__main__":
    cmd, arg = sys.argv[1], Path(sys.argv[2])
    if cmd == "make":
        make(arg)
    elif cmd == "check":
        check(arg, sys.argv[3])
    elif cmd == "resample":
        resample(arg)
