"""Scripts of the nations in plots: once navab.analysis is imported (as every report notebook does), a plot with Chinese
labels and French and German accents renders to PNG with no missing glyph. Never skipped: the font is a dependency."""
import io, logging, warnings
import pytest
import matplotlib
matplotlib.use('Agg')

LABELS = ['经济发展', '社会保障', 'Égalité', 'Straße']
TITLE = '中国：价值观与话题 — Mädchen, naïve, Öffentlichkeit, où'


def _render(family=None) -> list:
    "Render a bar plot with Chinese and accented labels to PNG: the missing-glyph and font-not-found messages (warnings and logs)."
    import matplotlib.pyplot as plt
    msgs = []
    class Keep(logging.Handler):
        def emit(self, r): msgs.append(r.getMessage())
    log, keep = logging.getLogger('matplotlib'), Keep(level=logging.WARNING)
    log.addHandler(keep)
    try:
        with warnings.catch_warnings(record=True) as caught, matplotlib.rc_context({'font.family': family} if family else {}):
            warnings.simplefilter('always')
            fig, ax = plt.subplots(figsize=(5, 3)); ax.bar(LABELS, [1, 2, 3, 4]); ax.set_title(TITLE); ax.set_xlabel('话题')
            b = io.BytesIO(); fig.savefig(b, format='png'); plt.close(fig)
    finally: log.removeHandler(keep)
    assert b.getbuffer().nbytes > 5_000
    return [m for m in [str(w.message) for w in caught] + msgs if 'missing from font' in m or 'Glyph' in m or 'not found' in m]


def test_chinese_and_accents_render_after_importing_analysis():
    from navab.analysis import CJK_FONT, CJK_FAMILIES, cjk_font_file
    if CJK_FONT is None:   # not a skip: the font comes with navab's dependencies, so its absence is a broken install
        pytest.fail("no CJK font for matplotlib: run `make install` (or pip install -e .), which installs noto-cjk-sans-otc, "
                    f"the Noto Sans CJK font as a Python package (no root needed); found file: {cjk_font_file()}")
    assert CJK_FONT in CJK_FAMILIES and matplotlib.rcParams['font.family'][:2] == ['DejaVu Sans', CJK_FONT]
    missing = _render()
    assert not missing, missing


def test_the_check_sees_missing_glyphs_without_the_fallback():
    "The same plot with DejaVu Sans alone warns about each Chinese glyph (and none of the accents): the check above can fail."
    import navab.analysis  # noqa: F401  (whatever it set, the rc_context below overrides it)
    missing = _render(['DejaVu Sans'])
    assert missing and all('missing from font' in m for m in missing), missing
    assert any('CJK UNIFIED IDEOGRAPH' in m for m in missing) and not any('LATIN' in m for m in missing), missing
