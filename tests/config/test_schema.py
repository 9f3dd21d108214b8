"""Every config value is checked before anything runs: one line naming KEY=VALUE and what to write instead."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from crossmodal_cli.config.check import Range, check_value, conforms
from crossmodal_cli.config.schema import validate_eval
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import check_config


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose(name, overrides=overrides)


def check_train(*overrides: str) -> None:
    check_config(_compose("train", list(overrides)))


# (overrides, the start of the one-line message)
BAD_TRAIN = [
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1: must be a number > 0, or null"),
    ("trainer.grad_clip=abc", "trainer.grad_clip=abc: must be a number > 0, or null"),
    ("trainer.grad_clip=0", "trainer.grad_clip=0: must be a number > 0, or null"),
    ("scheduler=step scheduler.gamma=abc", "scheduler.gamma=abc: must be a number > 0"),
    ("scheduler=step scheduler.step_epochs=0", "scheduler.step_epochs=0: must be a number > 0"),
    ("scheduler.min_lr_ratio=2", "scheduler.min_lr_ratio=2: must be a number >= 0 and <= 1"),
    ("scheduler=onecycle scheduler.max_lr_ratio=-1", "scheduler.max_lr_ratio=-1: must be a number > 0"),
    ("trainer.checkpoint_every_n_steps=abc", "trainer.checkpoint_every_n_steps=abc: must be a whole number >= 1"),
    ("trainer.keep_last_k=abc", "trainer.keep_last_k=abc: must be a whole number >= 0"),
    ("trainer.keep_last_k=-2", "trainer.keep_last_k=-2: must be a whole number >= 0"),
    ("seed=-1", "seed=-1: must be a whole number >= 0"),
    ("seed=abc", "seed=abc: must be a whole number >= 0"),
    ("seed=1.5", "seed=1.5: must be a whole number >= 0"),
    ("data.val_fraction=abc", "data.val_fraction=abc: must be a number >= 0 and < 1"),
    ("data.test_fraction=1", "data.test_fraction=1: must be a number >= 0 and < 1"),
    ("data.val_fraction=0.6 data.test_fraction=0.5", "data.val_fraction=0.6 data.test_fraction=0.5: together"),
    ("trainer.modality_dropout=abc", "trainer.modality_dropout=abc: must be a number >= 0 and < 1"),
    ("trainer.modality_dropout=1", "trainer.modality_dropout=1: must be a number >= 0 and < 1"),
    ("trainer.early_stopping_patience=abc", "trainer.early_stopping_patience=abc: must be a whole number >= 1"),
    ("scheduler.warmup_epochs=abc", "scheduler.warmup_epochs=abc: must be a number >= 0"),
    ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs=-1: must be a number >= 0"),
    ("data.text.vocab_size=abc", "data.text.vocab_size=abc: must be a whole number >= 16"),
    ("data.image_size=abc", "data.image_size=abc: must be a whole number >= 16"),
    ("data.image_size=0", "data.image_size=0: must be a whole number >= 16"),
    ("data.image_size=-32", "data.image_size=-32: must be a whole number >= 16"),
    ("data.audio.seconds=0", "data.audio.seconds=0: must be a number > 0"),
    ("data.audio.sample_rate=0", "data.audio.sample_rate=0: must be a whole number >= 1000"),
    ("data.text.max_length=0", "data.text.max_length=0: must be a whole number >= 2"),
    ("data.on_missing=skip", "data.on_missing=skip: must be one of error, drop, zero"),
    ("data.augment=maybe", "data.augment=maybe: must be true or false"),
    ("data.columns.image=null", "data.columns.image=null: must be a string"),
    ("optimizer.lr=abc", "optimizer.lr=abc: must be a number > 0"),
    ("optimizer.lr=0", "optimizer.lr=0: must be a number > 0"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1: must be a number >= 0"),
    ("optimizer.betas=[0.9]", "optimizer.betas=[0.9]: must be a list of 2 numbers in [0, 1)"),
    ("optimizer=sgd optimizer.momentum=-1", "optimizer.momentum=-1: must be a number >= 0"),
    ("optimizer=sgd optimizer.nesterov=yes", "optimizer.nesterov=yes: must be true or false"),
    ("modalities=[image,imgae]", "modalities=[image,imgae]: must be null (every modality with a column) or a list"),
    ("modalities=[]", "modalities=[]: must be null"),
    ("modalities=[text,text]", "modalities=[text,text]: must be null"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: must be a whole number >= 0"),
    ("trainer.batch_size=-4", "trainer.batch_size=-4: must be a whole number >= 1"),
    ("trainer.batch_size=8.5", "trainer.batch_size=8.5: must be a whole number >= 1"),
    ("trainer.num_workers=-1", "trainer.num_workers=-1: must be a whole number >= 0 or one of auto"),
    ("trainer.precision=fp8", "trainer.precision=fp8: must be one of auto, bf16, fp16, fp32"),
    ("trainer.device=gpu", "trainer.device=gpu: must be auto, cpu, cuda or cuda:N"),
    ("trainer.monitor_mode=up", "trainer.monitor_mode=up: must be one of max, min"),
    ("trainer.monitor=val/acc", "trainer.monitor=val/acc: use one of val/loss, val/accuracy, val/f1_macro"),
    ("trainer.progress_bar=1", "trainer.progress_bar=1: must be true or false"),
    ("fusion.dropout=1.0", "fusion.dropout=1.0: must be a number >= 0 and < 1"),
    ("fusion.hidden_dim=0", "fusion.hidden_dim=0: must be a whole number >= 1"),
    ("fusion=attention fusion.heads=3", "fusion.heads=3: must divide fusion.width=128"),
    ("fusion=late fusion.combine=max", "fusion.combine=max: must be one of mean, learned"),
    ("fusion=cascade fusion.order=[image,txt]", "fusion.order=[image,txt]: must be a list in brackets"),
    ("+fusion.foo=1", "fusion.foo: unknown key for crossmodal_cli.fusion.concat.ConcatFusion"),
    ("+fusion.hiden_dim=1", "fusion.hiden_dim: unknown key for crossmodal_cli.fusion.concat.ConcatFusion; did you "
                            "mean hidden_dim?"),
    ("~fusion.dropout", "fusion.dropout: missing; crossmodal_cli.fusion.concat.ConcatFusion needs it"),
    ("+fusion.in_dims={}", "fusion.in_dims: set by crossmodal at run time"),
    ("fusion._target_=crossmodal_cli.fusion.nope.Nope", "fusion._target_=crossmodal_cli.fusion.nope.Nope: cannot "
                                                        "import it"),
    ("+trainer.foo=2", "trainer.foo: unknown key in trainer"),
    ("+trainer.max_epoch=2", "trainer.max_epoch: unknown key in trainer; did you mean max_epochs?"),
    ("encoder/text=bert_small encoder.text.num_heads=7", "encoder.text: hidden_size=512 must be divisible by "
                                                         "num_heads=7"),
    ("encoder.text.pooling=max", "encoder.text.pooling=max: must be one of mean, cls"),
    ("encoder.image.channels=[]", "encoder.image.channels=[]: must be a non-empty list"),
    ("data.image_size=32 encoder.image.channels=[8,8,8,8,8,8]", "data.image_size=32: too small for encoder/image "
                                                                "(crossmodal_cli.encoders.image.TinyCNN): Given input"),
    ("encoder.image.std=[0.5,0,0.5]", "encoder.image.std=[0.5,0,0.5]: must be a list of 3 numbers > 0"),
    ("encoder/image=resnet18 encoder.image.arch=vgg16", "encoder.image.arch=vgg16: not a torchvision ResNet"),
    ("encoder.audio.hop_ms=0", "encoder.audio.hop_ms=0: must be a number > 0"),
    ("task.label_smoothing=1.5", "task.label_smoothing=1.5: must be a number >= 0 and < 1"),
    ("trainer.device=cuda:0", "trainer.device=cuda:0: no CUDA GPU is visible"),
    ("trainer.monitor=val/loss trainer.monitor_mode=max", "trainer.monitor_mode=max: with trainer.monitor=val/loss "
                                                          "best.ckpt would be the worst epoch; use "
                                                          "trainer.monitor_mode=min"),
    ("task=regression trainer.monitor=val/accuracy", "trainer.monitor=val/accuracy: use one of val/loss, val/mae, "
                                                     "val/r2, val/rmse"),
    ("task=regression trainer.monitor_mode=max", "trainer.monitor_mode=max: with trainer.monitor=val/mae best.ckpt "
                                                 "would be the worst epoch"),
    ("task=multilabel task.threshold=1.5", "task.threshold=1.5: must be"),
    ("task=multilabel task.separator=''", "task.separator="),
    ("task=classification task.class_weights=equal", "task.class_weights=equal: must be one of"),
    ("task=regression task.loss=l1", "task.loss=l1: must be one of mse, huber"),
    ("task=multitask", "task.heads: missing; set it on the command line"),
    ("task=multitask task.heads={a:{type:clasification}}", "task.heads.a.type=clasification: use one of "
                                                           "classification, multilabel, regression"),
    ("task=multitask task.heads={a:{type:regression,weight:-1}}", "task.heads.a.weight=-1: must be a number > 0"),
    ("task=retrieval modalities=[image,audio]", "modalities=['image', 'audio']: task=retrieval pairs images with "
                                                "texts"),
    ("task=retrieval trainer.modality_dropout=0.2", "trainer.modality_dropout=0.2: task=retrieval has no fusion"),
    ("task=retrieval data.on_missing=zero", "data.on_missing=zero: task=retrieval would pair a blank input"),
    ("trainer.monitor_mode=min", "trainer.monitor_mode=min: with trainer.monitor=val/accuracy best.ckpt would be"),
    ("data=csv data.csv=nope.csv", "data.csv=nope.csv: CSV file not found"),
    ("data.root=/nonexistent/folder", "data.root=/nonexistent/folder: no such folder"),
    ("data.text.tokenizer=/nonexistent", "data.text.tokenizer=/nonexistent: no such folder"),
    ("resume=/nonexistent/run", "resume=/nonexistent/run: no checkpoint at /nonexistent/run/checkpoints/last.ckpt"),
    ("data.audio.seconds=100000", "data.audio.seconds=100000: must be a number > 0 and <= 600"),
    ("encoder/text=hf encoder.text.pretrained=bert-base-uncased", "encoder.text.pretrained=bert-base-uncased: not a "
                                                                  "local folder with a Hugging Face model"),
]


@pytest.mark.parametrize("overrides,message", BAD_TRAIN, ids=[b[0] for b in BAD_TRAIN])
def test_a_wrong_train_value_is_one_line_naming_key_and_value(overrides, message):
    if message.startswith("trainer.device=cuda") and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(CrossmodalError) as err:
        check_train(*overrides.split())
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_the_shipped_configs_pass(tmp_path):
    check_train()
    for fusion in ("concat", "sum", "weighted", "product", "gated", "bilinear", "attention", "cross_attention", "late",
                   "cascade"):
        check_train(f"fusion={fusion}")
    check_train("experiment=gpu_base", "trainer.device=cpu", "trainer.precision=fp32")
    for option in ("optimizer=sgd", "optimizer=adam", "scheduler=step", "scheduler=onecycle", "scheduler=none",
                   "data=csv", "trainer.grad_clip=null", "seed=0", "trainer.num_workers=3", "data.columns.label=0",
                   "trainer.monitor=val/loss trainer.monitor_mode=min", "encoder/image=torchvision"):
        check_train(*option.split())


def test_modalities_without_brackets_is_one_modality():
    cfg = _compose("train", ["modalities=image"])
    assert list(check_config(cfg).modalities) == ["image"]


BAD_EVAL = [
    ([], "ckpt: missing; pass ckpt=PATH/TO/checkpoints/best.ckpt"),
    (["ckpt=x.ckpt", "trainer.batch_size=abc"], "trainer.batch_size=abc: must be a whole number >= 1, or null"),
    (["ckpt=x.ckpt", "trainer.batch_size=-4"], "trainer.batch_size=-4: must be a whole number >= 1, or null"),
    (["ckpt=x.ckpt", "trainer.batch_size=0"], "trainer.batch_size=0: must be a whole number >= 1, or null"),
    (["ckpt=x.ckpt", "split=dev"], "split=dev: must be one of train, val, test"),
    (["ckpt=x.ckpt", "+data.columns.image_path=x"], "data.columns.image_path: unknown key in data.columns"),
]


@pytest.mark.parametrize("overrides,message", BAD_EVAL, ids=[" ".join(b[0]) or "no ckpt" for b in BAD_EVAL])
def test_a_wrong_eval_value_is_one_line(overrides, message):
    with pytest.raises(CrossmodalError) as err:
        validate_eval(_compose("eval", overrides))
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("value,hint,ok", [
    (3, int, True), (True, int, False), (3, float, True), (3.5, int, False), ("a", str, True), (None, str, False),
    ([1, 2], list[int], True), ([1, "a"], list[int], False), (5, __import__("typing").Annotated[int, Range(ge=6)],
                                                               False),
])
def test_conforms(value, hint, ok):
    assert conforms(value, hint) is ok


def test_a_value_is_shown_as_typed():
    with pytest.raises(CrossmodalError, match=r"^x=0.001: must be a number > 0.1$"):
        check_value("x", 0.001, __import__("typing").Annotated[float, Range(gt=0.1)])
