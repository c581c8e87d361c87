"""Every weight and dataset the paper's recipe needs: where it comes from, at which revision, and the sha256 each
file must have. `asva fetch --list` prints this table.

How the hashes were found (no file could be downloaded where this was written): an LFS file's sha256 is its
Hub object id, published by the Hub and repeated in mirrors and other projects' manifests; every pin below was
read in at least one such public record, named in ``note``. ``sha256`` empty means nobody has published one
(the authors' Google Drive files): `asva fetch --verify` then prints the hash of what was placed, to be pinned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from asva_platform.fetch.download import Pin

Kind = Literal["hub", "url", "manual"]


@dataclass(frozen=True)
class SourceFile:
    """One file of a source."""

    path: str
    """Path inside the source (the Hub repo, or the URL's file name) and, under the source's ``dest``, on disk."""
    pin: Pin
    """sha256 (and size where published) the file must have."""
    url: str = ""
    """``url`` sources: where to download it from."""


@dataclass(frozen=True)
class Source:
    """One place files come from."""

    name: str
    """What `asva fetch` calls it (``sd15``, ``imagebind``, ...); ``all`` fetches every one."""
    kind: Kind
    """``hub``: a Hugging Face Hub repo at a pinned revision (``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured);
    ``url``: plain HTTPS files; ``manual``: a person must download them (Google Drive quotas, sign-ins) and
    place them under ``dest``; `asva fetch --verify` checks them."""
    dest: str
    """Folder under ``--dest`` the files go to."""
    files: tuple[SourceFile, ...]
    description: str
    repo: str = ""
    """``hub``: the repo id."""
    revision: str = ""
    """``hub``: the commit the files are pinned at (a full sha, never a branch)."""
    repo_type: str = "model"
    where: str = ""
    """``manual``: the page to download from and what to do with it."""
    overrides: tuple[str, ...] = ()
    """Config overrides pointing an experiment at this source's files; ``{dest}`` is the source's folder."""
    note: str = ""
    """Why this source and revision, where the pins were read."""


SD15_REVISION = "f03de327dd89b501a01da37fc5240cf4fdba85a1"

SOURCES: tuple[Source, ...] = (
    Source(
        name="sd15",
        kind="hub",
        dest="stable-diffusion-v1-5",
        repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision=SD15_REVISION,
        description="Stable Diffusion v1.5 in diffusers layout: the VAE, the 2D UNet AVSyncD is initialised "
        "from, the scheduler config, and the CLIP-L text encoder and tokenizer (for text encodings)",
        files=(
            SourceFile(
                "model_index.json", Pin("e2f6f22e274374010aec30c79eb2d6e53fff4a36ac0225523a92cb2d41a83347")
            ),
            SourceFile(
                "scheduler/scheduler_config.json",
                Pin("699cce92eb7c122e2eb7dfdea78e6187fda76a5ed4a8e42319b85610e620e091"),
            ),
            SourceFile(
                "unet/config.json", Pin("78f474de6bab3d893868f37be97b636ae65c0df3073ed3256ca458ff599b5f96")
            ),
            SourceFile(
                "unet/diffusion_pytorch_model.safetensors",
                Pin("19da7aaa4b880e59d56843f1fcb4dd9b599c28a1d9d9af7c1143057c8ffae9f1", 3438167540),
            ),
            SourceFile(
                "vae/config.json", Pin("786a7d21647ddea6a04b9675c03d3cb45e90a2f3c6da5fbda2c54ade040036de")
            ),
            SourceFile(
                "vae/diffusion_pytorch_model.safetensors",
                Pin("a2b5134f4dbc140d9c11f11cba3233099e00af40f262f136c691fb7d38d2194c", 334643276),
            ),
            SourceFile(
                "text_encoder/config.json",
                Pin("845df614cb9327ae7bbea027316246fae917827407da6df13572e41b5f93b4cc"),
            ),
            SourceFile(
                "text_encoder/model.safetensors",
                Pin("d008943c017f0092921106440254dbbe00b6a285f7883ec8ba160c3faad88334", 492265874),
            ),
            SourceFile(
                "tokenizer/merges.txt",
                Pin("9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"),
            ),
            SourceFile(
                "tokenizer/vocab.json",
                Pin("e089ad92ba36837a0d31433e555c8f45fe601ab5c221d4f607ded32d9f7a4349"),
            ),
            SourceFile(
                "tokenizer/special_tokens_map.json",
                Pin("c4864a9376a8401918425bed71fc14fc0e81f9b59ec45c1cf96cccb2df508eac", 472),
            ),
            SourceFile(
                "tokenizer/tokenizer_config.json",
                Pin("00439066fcba73de57644cf41e4e3b9f2dbb09d7f3fc2005898ba52399045882", 806),
            ),
        ),
        overrides=("model.pretrained_sd={dest}",),
        note="runwayml/stable-diffusion-v1-5 (the authors' README) was taken down in 2024; "
        "stable-diffusion-v1-5/stable-diffusion-v1-5 is the maintained copy with the same weight files. Pinned "
        "at its first commit f03de327, the revision a public manifest lists every file's hash at; the three "
        "weight files' hashes are also the Hub object ids shown by duplicates of the runwayml repo.",
    ),
    Source(
        name="imagebind",
        kind="url",
        dest="imagebind",
        description="ImageBind-Huge: AVSyncD's frozen audio encoder, and the IA / IT / AlignSync embedder",
        files=(
            SourceFile(
                "imagebind_huge.pth",
                Pin("d6f6c22bedcc90708448d5d2fbb7b2db9c73f505dc89bd0b2e09b23af1b62157", 4803584173),
                url="https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
            ),
            SourceFile(
                "bpe_simple_vocab_16e6.txt.gz",
                Pin("924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a", 1356917),
                url="https://raw.githubusercontent.com/mlfoundations/open_clip/v2.24.0/src/open_clip/"
                "bpe_simple_vocab_16e6.txt.gz",
            ),
        ),
        overrides=(
            "model.audio_encoder_weights={dest}/imagebind_huge.pth",
            "eval.metrics.imagebind_weights={dest}/imagebind_huge.pth",
            "eval.metrics.imagebind_bpe={dest}/bpe_simple_vocab_16e6.txt.gz",
        ),
        note="the URL ImageBind's own code downloads from; size and hash as several independent Hub mirrors "
        "of the file record them. The BPE vocabulary (IT's tokenizer) is CLIP's, the same file ImageBind ships, "
        "here from open_clip's v2.24.0 tag.",
    ),
    Source(
        name="metric-nets",
        kind="url",
        dest="metrics",
        description="FID's Inception (pytorch-fid) and FVD's I3D (StyleGAN-V's TorchScript)",
        files=(
            SourceFile(
                "pt_inception-2015-12-05-6726825d.pth",
                Pin("6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", 95628359),
                url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                "pt_inception-2015-12-05-6726825d.pth",
            ),
            SourceFile(
                "i3d_torchscript.pt",
                Pin("bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2", 51235320),
                url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
            ),
        ),
        overrides=(
            "eval.metrics.inception_weights={dest}/pt_inception-2015-12-05-6726825d.pth",
            "eval.metrics.i3d_weights={dest}/i3d_torchscript.pt",
        ),
        note="the URLs pytorch-fid and StyleGAN-V's FVD code use; the Inception file's name carries the first "
        "8 hex of its sha256 (torch hub's convention).",
    ),
    Source(
        name="avsyncd-checkpoints",
        kind="manual",
        dest="checkpoints",
        description="the authors' released AVSyncD checkpoints (AVSync15 step 37000, Landscapes 24000, "
        "TheGreatestHits 16000), each a `modules/` folder with unet/ and audio_encoder/",
        where="Google Drive (lzhangbj/ASVA README): AVSync15 id 17ZYopMVM1ZuJ1CBZPzhwAyOa4rR9Eo-_, Landscapes "
        "1Wa0wK9D_qlkT8U2O8zCz6UoQql-A3zjD, TheGreatestHits 1u8Ksc9TrDhcr6tV_7xH9RsbdkklH-2y9; unpack so that "
        "DEST/checkpoints/avsync15_audio-cond_cfg/ckpts/checkpoint-37000/modules/unet/config.json exists",
        files=(
            SourceFile("avsync15_audio-cond_cfg/ckpts/checkpoint-37000/modules/unet/config.json", Pin("")),
            SourceFile(
                "avsync15_audio-cond_cfg/ckpts/checkpoint-37000/modules/audio_encoder/config.json", Pin("")
            ),
        ),
        overrides=(
            # the released UNet is evaluated as the model's init (`eval.checkpoint: init`, the default)
            "model.init_unet={dest}/avsync15_audio-cond_cfg/ckpts/checkpoint-37000/modules/unet",
        ),
        note="no hash of these files has been published; `asva fetch --verify` prints what it finds so the "
        "project can pin it. Only the folders' config.json files are listed: the weight file's name "
        "(.bin or .safetensors) depends on the diffusers version that saved it, and the UNet loader takes "
        "either.",
    ),
    Source(
        name="sync-classifier",
        kind="manual",
        dest="avsync-classifier",
        description="the authors' audio-video sync classifier (RelSync / AlignSync), checkpoint-40000 modules",
        where="Google Drive id 1Paqjad4a8mjujMJBEYqmnNEgGPi595lb (lzhangbj/ASVA README); unpack so that "
        "DEST/avsync-classifier/modules/head/config.json exists",
        files=(
            SourceFile("modules/audio_encoder/config.json", Pin("")),
            SourceFile("modules/video_encoder/config.json", Pin("")),
            SourceFile("modules/head/config.json", Pin("")),
        ),
        overrides=("eval.metrics.avsync_classifier={dest}/modules",),
        note="KeyVID ships a different classifier under the same metric names: the sha256 recorded with each "
        "evaluation (of the whole modules/ folder) tells them apart.",
    ),
    Source(
        name="text-encodings",
        kind="manual",
        dest="text",
        description="the CLIP-L encodings of AVSync15's class prompts and of the empty prompt",
        where="Google Drive: the dataset folder 1rGPBiswIVBgZj5BUViGRWePxEEdq21p6 holds "
        "AVSync15/class_clip_text_encodings_stable-diffusion-v1-5.pt; the null text is file "
        "1fuKlVKdR9tw2wFE3RShH6jRjnvxPNR5u (openai-clip-l_null_text_encoding.pt)",
        files=(
            SourceFile("class_clip_text_encodings_stable-diffusion-v1-5.pt", Pin("")),
            SourceFile("openai-clip-l_null_text_encoding.pt", Pin("")),
        ),
        overrides=(
            "model.text_encodings={dest}/class_clip_text_encodings_stable-diffusion-v1-5.pt",
            "model.null_text_encoding={dest}/openai-clip-l_null_text_encoding.pt",
        ),
        note="a third-party copy of the class encodings (Hub dataset RyanWW/KeyVID_data) has sha256 "
        "10b3e0bcf2f12ee7... (3,553,440 bytes); not pinned: nobody has confirmed it is the authors' file.",
    ),
    Source(
        name="avsync15",
        kind="manual",
        dest="AVSync15",
        description="the AVSync15 dataset: 1,350 train and 150 test videos of 15 classes, lists and class map",
        where="Google Drive folder 1rGPBiswIVBgZj5BUViGRWePxEEdq21p6 (lzhangbj/ASVA README, after the July "
        "2024 update); unpack AVSync15/ so that DEST/AVSync15/train.txt exists",
        files=(
            SourceFile("train.txt", Pin("")),
            SourceFile("test.txt", Pin("")),
            SourceFile("class_mapping.json", Pin("")),
        ),
        overrides=("dataset.root={dest}",),
        note="every video named in train.txt and test.txt is checked for presence by --verify.",
    ),
)

NAMES: tuple[str, ...] = tuple(s.name for s in SOURCES)


def by_name(names: list[str], table: tuple[Source, ...] = SOURCES) -> list[Source]:
    """The sources ``names`` asks for (``all`` = every one), in table order; an unknown name is an error."""
    known = {s.name for s in table}
    unknown = [n for n in names if n != "all" and n not in known]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r}; known: {', '.join(sorted(known))}, all")
    return [s for s in table if "all" in names or s.name in names]
