"""The model contract: one ``model.yaml`` per model package, parsed and checked here.

A manifest says which series a model accepts, how its input is preprocessed, which
network and weights it runs, and how each output is coded (SNOMED CT or DCM), so the
node can route, run and encode any package without code changes.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models.contract_errors import ManifestError


class CodedConcept(BaseModel):
    """A code triplet as DICOM writes it (Code Value, Coding Scheme Designator, Code Meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str
    scheme: str
    meaning: str


class ModelTask(StrEnum):
    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"


class SeriesSelection(BaseModel):
    """Conditions on a series' attributes; an empty list accepts any value."""

    model_config = ConfigDict(extra="forbid")

    modality: list[str] = Field(default_factory=list)
    sop_class_uid: list[str] = Field(default_factory=list)
    body_part_examined: list[str] = Field(default_factory=list)
    image_type_contains: list[str] = Field(default_factory=list)
    min_instances: int = Field(default=1, ge=1)

    def refusal(
        self,
        *,
        modality: str,
        sop_class_uid: str,
        body_part_examined: str,
        image_type: str,
        instances: int,
    ) -> str | None:
        """Why this selection refuses a series, or None when it accepts it."""
        if self.modality and modality not in self.modality:
            return f"modality {modality or '(none)'} not in {self.modality}"
        if self.sop_class_uid and sop_class_uid not in self.sop_class_uid:
            return f"SOP class {sop_class_uid or '(none)'} not accepted"
        if self.body_part_examined and body_part_examined.upper() not in self.body_part_examined:
            return f"body part {body_part_examined or '(none)'} not in {self.body_part_examined}"
        values = {part.strip().upper() for part in image_type.split("\\")}
        missing = [v for v in self.image_type_contains if v.upper() not in values]
        if missing:
            return f"image type {image_type or '(none)'} lacks {missing}"
        if instances < self.min_instances:
            return f"{instances} instance(s), model needs at least {self.min_instances}"
        return None


class SeriesInput(BaseModel):
    """A further series of the same study a multimodal model takes (CT+PET, T1+T2).

    It is brought onto the primary series' grid (registered by mutual information, or
    resampled as is when both share a frame of reference) and becomes the next input
    channel, preprocessed with the same steps as the primary.
    """

    model_config = ConfigDict(extra="forbid")

    role: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    accepts: SeriesSelection
    registration: Literal["rigid", "affine", "none"] = "rigid"


class PreprocessStep(BaseModel):
    """One declarative preprocessing step: its name and parameters."""

    model_config = ConfigDict(extra="allow")

    step: str

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class NetworkSpec(BaseModel):
    """Which network a package runs and the digest of the file that holds it.

    ``format`` names an entry of ``models.formats.FORMATS``; each format says which of
    the optional fields it needs (``architecture``/``parameters``/``weights`` for an
    in-repo ``module``, ``weights`` for ``torchscript`` and ``onnx``, ``bundle`` for a
    ``monai_bundle``) and which it refuses, so a new format is added there, not here.
    ``sha256`` always pins the one file the network is loaded from.

    ``spatial_dims`` 2: the network runs on slices (B, C, rows, columns); 3: on volumes
    (B, C, slices, rows, columns). A 3D segmentation network runs on windows of
    ``patch_size`` = [slices, rows, columns] that overlap by ``patch_overlap`` (a
    fraction of the patch) and are blended; a 3D classifier sees the whole prepared
    volume, whose size its preprocessing fixes (``crop_or_pad``).
    """

    model_config = ConfigDict(extra="forbid")

    format: str = "module"
    architecture: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    bundle: str | None = None
    sha256: str
    spatial_dims: Literal[2, 3] = 2
    patch_size: (
        Annotated[list[Annotated[int, Field(ge=1, le=1024)]], Field(min_length=3, max_length=3)]
        | None
    ) = None
    patch_overlap: Annotated[float, Field(ge=0, lt=1)] = 0.25

    @model_validator(mode="after")
    def _patch_for_3d_only(self) -> NetworkSpec:
        if self.patch_size is not None and self.spatial_dims != 3:
            raise ValueError("patch_size applies to 3D networks only (spatial_dims: 3)")
        return self

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
            raise ValueError("sha256 must be 64 hexadecimal digits")
        return value.lower()

    def given_fields(self) -> set[str]:
        """The optional fields this manifest sets (``format`` and ``sha256`` aside)."""
        return {
            name
            for name in ("architecture", "parameters", "weights", "bundle")
            if getattr(self, name) not in (None, {})
        }


class Urgency(StrEnum):
    """How soon a critical finding must be read: the UPS priorities (Scheduled Procedure
    Step Priority, 0074,1200), named again here because ``models`` imports no ``node``
    (``node.db.worklist.UpsPriority`` holds the same four values)."""

    STAT = "STAT"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


class ClassCritical(BaseModel):
    """A class's critical rule: it fires when the series' probability is at or above
    ``threshold``, and the finding is then read with ``urgency``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(gt=0, le=1)
    urgency: Urgency


class SegmentCritical(BaseModel):
    """A segment's critical rule: it fires when the segment's volume is at or above
    ``min_volume_ml``, and the finding is then read with ``urgency``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_volume_ml: float = Field(gt=0)
    urgency: Urgency


class SegmentSpec(BaseModel):
    """A label value of the network's output and how its segment is coded; optionally
    the volume above which it is a critical finding."""

    model_config = ConfigDict(extra="forbid")

    label: int = Field(ge=1, le=255)
    name: str
    category: CodedConcept
    type: CodedConcept
    critical: SegmentCritical | None = None


class ClassSpec(BaseModel):
    """A class the network scores, and the finding it stands for when present;
    optionally the probability above which it is a critical finding."""

    model_config = ConfigDict(extra="forbid")

    name: str
    finding: CodedConcept
    threshold: float = Field(default=0.5, ge=0, le=1)
    critical: ClassCritical | None = None

    @model_validator(mode="after")
    def _critical_above_presence(self) -> ClassSpec:
        # A critical threshold below the presence threshold would flag as critical a
        # finding the report calls absent.
        if self.critical is not None and self.critical.threshold < self.threshold:
            raise ValueError(
                f"class {self.name!r}: critical threshold {self.critical.threshold} is below "
                f"its presence threshold {self.threshold}"
            )
        return self


class SegmentationType(StrEnum):
    """How a segmentation model's SEG stores its segments.

    ``binary``: each voxel is in a segment or not (the label volume). ``fractional``:
    each segment's probability, 0 to 1 in steps of 1/255 (a DICOM FRACTIONAL SEG of
    type PROBABILITY), for viewers and downstream tools that threshold it themselves.
    """

    BINARY = "binary"
    FRACTIONAL = "fractional"


class Outputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segments: list[SegmentSpec] = Field(default_factory=list)
    classes: list[ClassSpec] = Field(default_factory=list)
    segmentation_type: SegmentationType = SegmentationType.BINARY

    @model_validator(mode="after")
    def _fractional_needs_segments(self) -> Outputs:
        if self.segmentation_type is SegmentationType.FRACTIONAL and not self.segments:
            raise ValueError("segmentation_type fractional needs segments to encode")
        return self


class ModelManifest(BaseModel):
    """The parsed ``model.yaml`` of one model package."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    version: str = Field(min_length=1, max_length=16)
    title: str
    manufacturer: str = "ainode"
    task: ModelTask
    demonstration: bool = Field(
        default=False, description="a demonstration model: results say 'not for clinical use'"
    )
    accepts: SeriesSelection  # the primary series: it triggers the job and sets the grid
    additional_inputs: list[SeriesInput] = Field(default_factory=list)
    preprocessing: list[PreprocessStep] = Field(default_factory=list)
    network: NetworkSpec
    outputs: Outputs
    card: str | None = None

    @field_validator("outputs")
    @classmethod
    def _labels_unique(cls, value: Outputs) -> Outputs:
        labels = [s.label for s in value.segments]
        if len(labels) != len(set(labels)):
            raise ValueError("segment labels must be unique")
        return value

    @property
    def input_channels(self) -> int:
        """Channels the network takes: the primary series, then each additional input."""
        return 1 + len(self.additional_inputs)

    @property
    def output_channels(self) -> int:
        """Channels the network must give: background + one per segment, or one per class."""
        if self.task is ModelTask.SEGMENTATION:
            return 1 + len(self.outputs.segments)
        return len(self.outputs.classes)

    def model_post_init(self, _context: Any) -> None:
        if self.task is ModelTask.SEGMENTATION and not self.outputs.segments:
            raise ValueError("a segmentation model must declare outputs.segments")
        if self.task is ModelTask.CLASSIFICATION and not self.outputs.classes:
            raise ValueError("a classification model must declare outputs.classes")

    @classmethod
    def from_file(cls, path: Path) -> ModelManifest:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: a manifest is a mapping of fields")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(manifest)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ManifestError(f"{path}: {problems}") from exc
