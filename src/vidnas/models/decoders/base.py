"""What every decoder family provides: the ``DECODERS`` registry, the ``DecoderFamily`` contract, ``Slotted``.

A decoder family is registered under the name an architecture file gives it (``arch.json``'s ``decoder``)::

    class SPTCNFamily(DecoderFamily):
        def build(self, arch, in_channels, num_classes):
            return SPTCNDecoder(in_channels[0], num_classes, channels=arch.channels, ...)

    DECODERS.register("sptcn", SPTCNFamily())

``build_model`` builds the encoder, reads the channels of the encoder maps the family names (``scales``), builds the
decoder with ``build`` and puts the model ``model`` names around it. The incremental (one-step) form of a decoder is
the decoder's own business: ``vidnas.models.incremental.compile_decoder`` runs its ``incremental_program(g)`` (its
dataflow over ``ProgramBuilder`` registers), or, without one, compiles it from the modules it knows (temporal convs,
per-frame modules, ``nn.Sequential``...; a composite block describes itself with ``incremental_visit(g, r)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from vidnas.registry import Registry

if TYPE_CHECKING:
    from vidnas.models.architecture import Arch

__all__ = ["DECODERS", "DecoderFamily", "Slotted"]


class DecoderFamily:
    """How ``build_model`` makes the decoders of one family (subclass it, register an instance in ``DECODERS``).

    Attributes:
        model: the model around the decoder (``vidnas.models.build.MODELS``):

            * ``window``: ``VideoSegmenter``; the decoder reads the one map at ``scales(arch)`` (default the
              stride-32 map) over a window: ``(B, C, T, h, w) -> (B, K, T, h, w)``;
            * ``multiscale``: ``MultiScaleSegmenter``; the decoder reads a list of maps, one per stride of
              ``scales(arch)`` (coarse first), ``[(B, C_s, T, h_s, w_s), ...] -> (B, K, T, h', w')``, or in training
              mode ``(logits, [aux logits, ...])``;
            * ``static``: ``StaticSegmenter``, per frame; the decoder reads the four maps ``(N, C_s, h_s, w_s)`` at
              strides 4, 8, 16, 32 and returns ``{"dec", "pred", "aux"}`` (the arch2 decoder's contract).
    """

    model: str = "window"

    def scales(self, arch: Arch) -> tuple[int, ...]:
        """Encoder strides the decoder reads, in its input order (``window``: one stride; default ``(32,)``)."""
        return (32,)

    def depths(self, arch: Arch) -> tuple[int, ...] | None:
        """Blocks per encoder stage of the model's encoder (None: the encoder's own); default ``arch.depths``."""
        return arch.depths

    def build(self, arch: Arch, in_channels: Sequence[int], num_classes: int) -> nn.Module:
        """The decoder ``arch`` describes, reading ``in_channels`` encoder channels (one per stride of ``scales``)."""
        raise NotImplementedError(f"{type(self).__name__} does not build decoders")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


DECODERS: Registry[DecoderFamily] = Registry("decoder", listed_as="decoders")  # arch.json's decoder -> its family


class Slotted:
    """A decoder with op slots a decoder supernet searches (a mixin of ``nn.Module`` subclasses).

    A slot is one entry of an ``nn.Sequential`` of decoder ops, named by its dotted path (``res_layers.0.conv1.0``);
    the class lists its slots with ``searchable_slots()`` and ``set_slot`` replaces the op in one.
    """

    def searchable_slots(self) -> list[tuple[str, int, int]]:
        """The op positions a decoder supernet searches, in beta-row order: ``(name, channels, dilation)``;
        ``OPS[op](channels, dilation)`` builds a candidate for a slot."""
        raise NotImplementedError

    def set_slot(self, slot: int | str, module: nn.Module) -> None:
        """Replace the op in ``slot`` (an index into ``searchable_slots()`` or its name) by ``module``."""
        names = [s[0] for s in self.searchable_slots()]
        name = names[slot] if isinstance(slot, int) else slot
        if name not in names:
            raise KeyError(f"unknown slot {slot!r}; valid slots: {', '.join(names)}")
        parent_name, _, index = name.rpartition(".")
        parent = self.get_submodule(parent_name)  # type: ignore[attr-defined]
        assert isinstance(parent, nn.Sequential)
        parent[int(index)] = module
