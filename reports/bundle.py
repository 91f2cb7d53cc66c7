"""The one inline copy of Vega, Vega-Lite and vega-embed that every report page carries.

vl-convert-python ships these libraries (with their dependencies) inside its wheel, so the page
is built without any network access and opens later without any either.
"""

from __future__ import annotations

import functools
import re

import altair as alt
import vl_convert


def vegalite_minor() -> str:
    """The Vega-Lite version Altair writes specs for, as vl-convert names it (e.g. `v6.4`)."""
    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    wanted = f"{major}.{minor}"
    have = vl_convert.get_vegalite_versions()
    if wanted in have:
        return f"v{wanted}"
    # closest older minor of the same major; Vega-Lite minors are backward compatible
    same_major = [v for v in have if v.split(".")[0] == major]
    return f"v{same_major[-1]}" if same_major else f"v{have[-1]}"


@functools.lru_cache(maxsize=1)
def vega_javascript() -> str:
    """Vega + Vega-Lite + vega-embed as one script defining `vegaEmbed`, `vega`, `vegaLite`.

    Safe to inline in a <script> element: any `</script` is escaped.
    """
    js = vl_convert.javascript_bundle(vl_version=vegalite_minor())
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)


def versions() -> dict[str, str]:
    """Versions of the embedded libraries, printed in the page's footer."""
    return {
        "vega": vl_convert.get_vega_version(),
        "vega-lite": vegalite_minor(),
        "vega-embed": vl_convert.get_vega_embed_version(),
        "altair": alt.__version__,
        "vl-convert": getattr(vl_convert, "__version__", "?"),
    }
