"""Exact finite-size spectral facts about S = XᵀX, X ∈ R^{n×d} with iid entries, used by ``iclab.theory``.

* ``wishart_trace_moments``: E tr(S^j) for Gaussian X, exact integers, any j (Stein's-lemma recursion).
* ``iid_trace_moments``: E tr(S^j) for any iid symmetric entry law given its moments, exact, j ≤ 6 (enumeration).
* ``sample_cov_trace_moments``: E tr(Ŝ^j), Ŝ = S/n, for N(0, s²) or U(−a, a) coordinates, as exact Fractions.
* ``wishart_spectrum_rule``: nodes and weights y_i, ρ_i with Σ_i ρ_i f(y_i) = E Σ_{s > 0} f(s) over the non-zero
  eigenvalues of Gaussian S, to ~1e-14 relative for smooth f — the exact one-point eigenvalue density of the real
  Wishart (Laguerre orthogonal) ensemble from de Bruijn's Pfaffian formula, integrated by composite Gauss–Legendre.
S has d − min(n, d) zero eigenvalues besides; spectral expectations E tr f(S) add (d − min(n, d))·f(0).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from functools import cache

import numpy as np
from scipy.special import gammaln

__all__ = ["iid_trace_moments", "sample_cov_trace_moments", "wishart_spectrum_rule", "wishart_trace_moments"]

IID_J_MAX = 6  # Bell(6)² = 41 209 index patterns; j = 7, 8 would take 0.7 M and 17 M


def _check_int(name: str, value, low: int) -> int:
    if int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def wishart_trace_moments(j_max: int, d: int, n: int) -> tuple[int, ...]:
    """(E tr S⁰, …, E tr S^{j_max}) for S = XᵀX [d, d], X [n, d] iid N(0, 1); exact Python integers.

    Stein's lemma E[X_ab g(X)] = E[∂g/∂X_ab] applied to tr S^{m+1} = Σ_ab X_ab (XS^m)_ab gives, for any product F
    of traces tr S^{a_s} (and tr S⁰ = d),
        E[tr S^{m+1}·F] = E[((n + m) tr S^m + Σ_{r<m} tr S^{r+1} tr S^{m−1−r})·F]
                          + Σ_s 2a_s E[tr S^{m+a_s}·F/tr S^{a_s}].
    The total degree drops by one per step, so memoising over multisets of exponents terminates.
    E tr S = nd, E tr S² = nd(n + d + 1), E tr S³ = nd(n² + d² + 3nd + 3n + 3d + 4).
    """
    j_max, d, n = _check_int("j_max", j_max, 0), _check_int("d", d, 1), _check_int("n", n, 1)

    @cache
    def mixed(exps: tuple[int, ...]) -> int:  # E Π_s tr S^{exps[s]}, exps sorted, all >= 1
        if not exps:
            return 1
        m, rest = exps[-1] - 1, exps[:-1]

        def e(*extra: int) -> int:  # E[Π tr S^extra · Π tr S^rest], tr S⁰ = d
            zeros = sum(x == 0 for x in extra)
            return d**zeros * mixed(tuple(sorted(rest + tuple(x for x in extra if x))))

        total = (n + m) * e(m) + sum(e(r + 1, m - 1 - r) for r in range(m))
        for s, a in enumerate(rest):
            total += 2 * a * mixed(tuple(sorted((*rest[:s], *rest[s + 1 :], m + a))))
        return total

    return (d, *(mixed((j,)) for j in range(1, j_max + 1)))


def _set_partitions(j: int) -> list[tuple[int, ...]]:
    """Set partitions of range(j) as restricted-growth strings (block label of each position)."""
    out: list[tuple[int, ...]] = [()]
    for _ in range(j):
        out = [(*s, b) for s in out for b in range(max(s, default=-1) + 2)]
    return out


@cache
def _index_patterns(j: int) -> dict[tuple[int, int, tuple[int, ...]], int]:
    """tr S^j = Σ over row indices r_1..r_j and column indices c_1..c_j of Π_t X_{r_t c_t} X_{r_t c_{t+1}}.

    Group the terms by the partitions of the row and column positions into equal indices: a pair with b_r row
    blocks and b_c column blocks occurs (n)_{b_r}(d)_{b_c} times (falling factorials) and has expectation
    Π_entries E x^{multiplicity}. Returns {(b_r, b_c, sorted multiplicities): number of partition pairs}, keeping
    only all-even multiplicities (odd moments vanish for a symmetric law).
    """
    parts = _set_partitions(j)
    out: Counter = Counter()
    for rows in parts:
        for cols in parts:
            mult = Counter((rows[t], c) for t in range(j) for c in (cols[t], cols[(t + 1) % j]))
            ms = tuple(sorted(mult.values()))
            if all(m % 2 == 0 for m in ms):
                out[(max(rows) + 1, max(cols) + 1, ms)] += 1
    return dict(out)


def _falling(x: int, k: int) -> int:
    out = 1
    for i in range(k):
        out *= x - i
    return out


def iid_trace_moments(j_max: int, d: int, n: int, coord_moments: Sequence) -> tuple:
    """(E tr S⁰, …, E tr S^{j_max}) for S = XᵀX, X [n, d] with iid entries of a symmetric law, j_max ≤ 6.

    coord_moments[m] = E x^m for even m ≤ 2·j_max (odd entries are ignored: they vanish by symmetry); with int or
    Fraction moments the result is exact. Gaussian moments (m − 1)!! reproduce ``wishart_trace_moments``.
    """
    j_max, d, n = _check_int("j_max", j_max, 0), _check_int("d", d, 1), _check_int("n", n, 1)
    if j_max > IID_J_MAX:
        raise ValueError(f"j_max must be <= {IID_J_MAX} (exact enumeration), got {j_max}")
    if len(coord_moments) < 2 * j_max + 1:
        raise ValueError(f"coord_moments must hold E x^m for m = 0..{2 * j_max}, got {len(coord_moments)} entries")
    out = [d]
    for j in range(1, j_max + 1):
        total = 0
        for (b_r, b_c, ms), count in _index_patterns(j).items():
            term = count * _falling(n, b_r) * _falling(d, b_c)
            for m in ms:
                term *= coord_moments[m]
            total += term
        out.append(total)
    return tuple(out)


def sample_cov_trace_moments(j_max: int, d: int, n: int, x_dist: str = "gaussian", scale: float = 1.0) -> list:
    """Exact μ_j = E tr(Ŝ^j), Ŝ = XᵀX/n, j = 0..j_max, as Fractions, for iid coordinates N(0, s²) (x_dist
    "gaussian", s = scale, any j_max) or U(−a, a) ("uniform", a = scale, j_max ≤ 6); exact in the float ``scale``."""
    if x_dist not in ("gaussian", "uniform"):
        raise ValueError(f"unknown x_dist {x_dist!r}; choose one of: gaussian, uniform")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    a = Fraction(scale)
    if x_dist == "gaussian":
        moments = wishart_trace_moments(j_max, d, n)
    else:  # E x^m = a^m/(m + 1) for even m
        moments = iid_trace_moments(j_max, d, n, [a**m / (m + 1) if m % 2 == 0 else 0 for m in range(2 * j_max + 1)])
        a = Fraction(1)
    return [a ** (2 * j) * Fraction(m) / Fraction(n) ** j for j, m in enumerate(moments)]


def _laguerre_functions(y: np.ndarray, k: int, alpha: int) -> np.ndarray:
    """[*y.shape, k] orthonormal Laguerre functions ψ_j(y) = y^{α/2} e^{−y/2} L_j^{(α)}(y)·√(j!/(j+α)!), y > 0.

    Three-term recurrence on the normalised functions (no overflow of L_j at large y)."""
    out = np.empty((*y.shape, k))
    out[..., 0] = np.exp(0.5 * alpha * np.log(y) - 0.5 * y - 0.5 * gammaln(alpha + 1.0))
    if k > 1:
        out[..., 1] = (1 + alpha - y) * out[..., 0] / np.sqrt(1.0 + alpha)
    for j in range(1, k - 1):
        prev = np.sqrt(j * (j + alpha)) * out[..., j - 1]
        out[..., j + 1] = ((2 * j + 1 + alpha - y) * out[..., j] - prev) / np.sqrt((j + 1) * (j + 1 + alpha))
    return out


@cache
def _spectrum_rule(p: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    alpha = q - p
    # Variable t = √y (a singular value): every integrand below is smooth in t, since y^{(α−1)/2} dy = 2t^α dt.
    # P(s_max > √p + √q + 12) < e^{−72}. Panels 0.25 wide, graded geometrically towards 0 for f with a pole near
    # y = 0 (ridge with small λ has one at y = −λ, t = ±i√λ).
    edges = np.concatenate([[0.0], 2.0 ** np.arange(-16, -2), np.arange(0.25, np.sqrt(p) + np.sqrt(q) + 12.25, 0.25)])
    gx, gw = np.polynomial.legendre.leggauss(20)
    lo, hi = edges[:-1, None], edges[1:, None]
    t = (lo + (hi - lo) * (gx + 1) / 2).ravel()  # (K,)
    dt = ((hi - lo) / 2 * gw).ravel()
    psi = _laguerre_functions(t**2, p, alpha)  # (K, p)
    # h_j(y) dy = y^{(α−1)/2} e^{−y/2} L̃_j(y) dy = 2ψ_j(t²) dt, h_j spanning w·(polynomials of degree < p)
    h = 2 * psi * dt[:, None]  # (K, p)
    # H_j(y) = ∫_0^y h_j: whole panels before the node plus Gauss–Legendre over [panel start, node]
    panel = h.reshape(len(edges) - 1, 20, p).sum(1)  # (panels, p)
    start = np.repeat(edges[:-1], 20)
    H = np.repeat(np.cumsum(panel, 0) - panel, 20, axis=0)
    for x, wx in zip(*np.polynomial.legendre.leggauss(30)):
        s = start + (t - start) * (x + 1) / 2
        H += (wx * (t - start))[:, None] * _laguerre_functions(s**2, p, alpha)  # 2ψ·(t − start)/2·wx
    c = panel.sum(0)  # (p,) ∫_0^∞ h_j
    G = 2 * H - c  # G_j(y) = ∫ sign(y − x) h_j(x) dx
    A = G.T @ h  # A_jk = ∫∫ sign(y − x) h_j(x) h_k(y) dx dy, antisymmetric
    # de Bruijn: E Π_i (1 + u f(s_i)) = Pf(A_u)/Pf(A_0) (bordered by c for odd p); d/du at 0 is ½ tr(A⁻¹ ∂A),
    # i.e. the one-point density ρ(y) = h(y)ᵀA⁻¹G(y) (+ the border term for odd p).
    if p % 2 == 0:
        dens = np.einsum("tk,kj,tj->t", h, np.linalg.inv(A), G)
    else:
        bordered = np.block([[A, c[:, None]], [-c[None, :], np.zeros((1, 1))]])
        inv = np.linalg.inv(bordered)
        dens = np.einsum("tk,kj,tj->t", h, inv[:p, :p], G) + h @ inv[p, :p]
    y = t**2
    y.flags.writeable = dens.flags.writeable = False
    return y, dens


def wishart_spectrum_rule(d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature for the non-zero eigenvalues of S = XᵀX, X [n, d] iid N(0, 1): Σ_i w_i f(y_i) = E Σ_{s>0} f(s).

    The p = min(n, d) non-zero eigenvalues have the real-Wishart (LOE) joint density ∝ |Δ(s)| Π s_i^{(q−p−1)/2}
    e^{−s_i/2}, q = max(n, d). Its one-point density ρ (Σ w_i = p) comes from de Bruijn's Pfaffian formula in the
    orthonormal Laguerre basis of parameter q − p (well conditioned), and is integrated on ~30·(√p + √q) nodes in
    t = √s; moments E tr S^j match ``wishart_trace_moments`` to ~1e-15 relative. Accuracy for f with a pole at
    −λ < 0 holds down to λ ~ 1e-8. Cached per (p, q); costs ~0.1 s at p = q = 40.

    Returns:
        y: [K] nodes (eigenvalue positions), w: [K] weights, both read-only float64.
    """
    d, n = _check_int("d", d, 1), _check_int("n", n, 1)
    return _spectrum_rule(min(d, n), max(d, n))
