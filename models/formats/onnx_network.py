"""An onnxruntime session behind ``nn.Module``'s call, so inference runs an ONNX network
as it runs any other. Imported only when an ONNX network is loaded (it needs torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    import onnxruntime


class OnnxNetwork(nn.Module):
    """An onnxruntime session behind ``nn.Module``'s call, so inference runs it unchanged.

    A (B, C, H, W) or (B, C, D, H, W) tensor goes in as float32 numpy, the first output
    comes back as a tensor on the input's device.
    """

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"providers={self.session.get_providers()}"
