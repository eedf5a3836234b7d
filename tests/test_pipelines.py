"""llmcourse.pipelines builds a real StableDiffusionPipeline, caches its training, and week05/03's exercise checks pass
the reference, reject plausible wrong answers and count stubs as not attempted. Everything runs on a tiny untrained
pipeline (random small weights), so it takes seconds; the trained pipeline is the notebook's business."""

import pytest
import torch
from exercise_harness import STUB, run_exercise

from llmcourse import pipelines
from llmcourse.vision import CAPTIONS_TRAIN, caption

NB = "week05/03_diffusion_pipelines.ipynb"


@pytest.fixture(scope="module")
def tiny():
    return pipelines.tiny_pipeline()


def _images(pipe, seed=0, **kwargs):
    return pipe(["a handwritten digit seven", "the number two"], num_inference_steps=3, output_type="pt",
                generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_tiny_pipeline_is_a_stable_diffusion_pipeline_that_reloads_identically(tiny, tmp_path):
    from diffusers import StableDiffusionPipeline

    assert type(tiny) is StableDiffusionPipeline
    assert tiny.tokenizer.model_max_length == pipelines.PIPELINE_RECIPE["max_length"]
    images = _images(tiny, guidance_scale=3.0)
    assert images.shape == (2, 1, 16, 16) and 0 <= images.min() and images.max() <= 1
    tiny.save_pretrained(tmp_path / "p")
    again = StableDiffusionPipeline.from_pretrained(tmp_path / "p")
    again.set_progress_bar_config(disable=True)
    assert torch.allclose(_images(again, guidance_scale=3.0), images, atol=1e-6)


def test_prompt_table_matches_encode_prompt(tiny):
    cond, uncond = pipelines.prompt_table(tiny)
    assert cond.shape[:2] == (10, len(CAPTIONS_TRAIN)) and uncond.shape == (1, *cond.shape[2:])
    want = tiny.encode_prompt([caption(CAPTIONS_TRAIN[0], 7)], "cpu", 1, False)[0]
    assert torch.allclose(cond[7, 0], want[0], atol=1e-5)


def test_course_pipeline_trains_once_then_reads_the_cache(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_HOME", str(tmp_path))
    recipe = {"vae_steps": 2, "unet_steps": 2, "vae_batch_size": 8, "batch_size": 8}
    first = pipelines.course_pipeline(**recipe)
    monkeypatch.setattr(pipelines, "train_pipeline", lambda *a, **k: pytest.fail("trained again"))
    second = pipelines.course_pipeline(**recipe)
    assert torch.allclose(_images(first), _images(second), atol=1e-6)
    assert second.vae.config.scaling_factor != 0.18215  # set from the measured latent spread, and saved


def test_judge_images_reads_pipeline_images_in_0_1():
    judge = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)  # noqa: E731  "0" when mean > 0
    assert pipelines.judge_images(torch.tensor([0.9, 0.1]).view(2, 1, 1, 1), judge).tolist() == [0, 1]


def _ctx(tiny):
    return {"torch": torch, "pipe": tiny}


@pytest.mark.parametrize("ex", ["3.1", "3.2"])
def test_reference_passes_and_stub_is_not_attempted(tiny, ex):
    assert run_exercise(NB, ex, _ctx(tiny)).status == "passed"
    assert run_exercise(NB, ex, _ctx(tiny), solution=STUB).status == "not attempted"


LOOP = """scheduler, unet = pipe.scheduler, pipe.unet
scheduler.set_timesteps(num_inference_steps)
size = unet.config.sample_size
latents = torch.randn(len(prompt_embeds), unet.config.in_channels, size, size, generator=generator)
latents = latents * {init}
for t in scheduler.timesteps:
    noise_pred = unet({model_input}, t, encoder_hidden_states=prompt_embeds).sample
    latents = scheduler.step(noise_pred, t, latents).prev_sample
image = pipe.vae.decode({decode}).sample
return {out}"""
RIGHT = {"init": "scheduler.init_noise_sigma", "model_input": "scheduler.scale_model_input(latents, t)",
         "decode": "latents / pipe.vae.config.scaling_factor", "out": "(image / 2 + 0.5).clamp(0, 1)"}


@pytest.mark.parametrize("wrong", [
    {"init": "1.0"},  # the start is not in Euler's units of sigma
    {"model_input": "latents"},  # no scale_model_input
    {"decode": "latents"},  # latents decoded without undoing the scaling
    {"decode": "latents * pipe.vae.config.scaling_factor"},  # scaled the wrong way
    {"out": "image.clamp(-1, 1)"},  # left in [-1, 1]
])
def test_sample_by_hand_rejects(tiny, wrong):
    solution = LOOP.format(**{**RIGHT, **wrong})
    assert run_exercise(NB, "3.1", _ctx(tiny), solution=solution).status == "failed"


START = """scheduler.set_timesteps(num_inference_steps)
kept = min({kept}, num_inference_steps)
timesteps = {timesteps}
return timesteps, {noisy}"""
RIGHT_START = {"kept": "int(num_inference_steps * strength)",
               "timesteps": "scheduler.timesteps[num_inference_steps - kept:]",
               "noisy": "scheduler.add_noise(latents, noise, timesteps[:1])"}


@pytest.mark.parametrize("wrong", [
    {"timesteps": "scheduler.timesteps[:kept]"},  # the noisiest steps instead of the last ones
    {"noisy": "scheduler.add_noise(latents, noise, timesteps[-1:])"},  # noised to the last kept step
    {"kept": "round(num_inference_steps * strength)"},  # rounds 5.5 up
    {"noisy": "latents + strength * noise"},  # strength used as a noise amount
    {"noisy": "scheduler.add_noise(latents, noise, torch.tensor([int(strength * 1000) - 1]))"},  # strength x T
])
def test_img2img_start_rejects(tiny, wrong):
    solution = START.format(**{**RIGHT_START, **wrong})
    assert run_exercise(NB, "3.2", _ctx(tiny), solution=solution).status == "failed"
