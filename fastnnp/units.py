"""Unit conversion between a model's units and ASE's eV and Å.

TorchMD-Net checkpoints carry no units: the user says which ones the model was trained in.
"""

from typing import Union

from ase import units

ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
    "Hartree": units.Hartree,
}
LENGTH_UNITS = {
    "Å": 1.0,
    "nm": units.nm,
    "Bohr": units.Bohr,
}
_LENGTH_ALIASES = {"A": "Å", "Ang": "Å", "Angstrom": "Å", "angstrom": "Å", "bohr": "Bohr", "Ha": "Hartree",
                   "hartree": "Hartree", "ev": "eV"}


def _factor(unit: Union[str, float], table: dict[str, float], kind: str) -> float:
    if isinstance(unit, (int, float)) and not isinstance(unit, bool):
        if not unit > 0:
            raise ValueError(f"{kind} unit factor must be positive, got {unit}")
        return float(unit)
    name = _LENGTH_ALIASES.get(unit, unit)
    if name not in table:
        raise ValueError(f"unknown {kind} unit {unit!r}; known: {', '.join(table)} (or a positive number)")
    return table[name]


def energy_factor(unit: Union[str, float]) -> float:
    """eV per model energy unit: a preset name (eV, meV, kcal/mol, kJ/mol, Hartree) or the
    number of eV in one model unit."""
    return _factor(unit, ENERGY_UNITS, "energy")


def length_factor(unit: Union[str, float]) -> float:
    """Å per model length unit: a preset name (Å, nm, Bohr) or the number of Å in one unit."""
    return _factor(unit, LENGTH_UNITS, "length")
