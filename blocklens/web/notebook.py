"""Notebook display: the report inside an isolated ``<iframe srcdoc>``. It runs in Jupyter, JupyterLab, VS Code
and Colab with no extension, several explanations on one page cannot clash, and the report's own Content
Security Policy keeps it offline. The frame tells its parent its height so it grows to fit (where the front
end runs the outer script; otherwise it scrolls at a fixed height)."""
from __future__ import annotations

import html
import uuid

from .report import inline_data, page_html, title_for

_RESIZE = """
new ResizeObserver(function () {{
  parent.postMessage({{blocklensFrame: "{fid}", height: document.documentElement.scrollHeight}}, "*");
}}).observe(document.body);"""


def notebook_html(expl, height: int = 900) -> str:
    fid = uuid.uuid4().hex[:12]
    doc = page_html(inline_data(expl), title_for(expl), after=_RESIZE.format(fid=fid))
    return (f'<iframe id="blocklens-{fid}" class="blocklens-frame" sandbox="allow-scripts" '
            f'style="width:100%;height:{int(height)}px;border:0;background:#f6f6f4" '
            f'title="{html.escape(title_for(expl))}" srcdoc="{html.escape(doc, quote=True)}"></iframe>'
            f'<script>(function(){{var f=document.getElementById("blocklens-{fid}");'
            f'window.addEventListener("message",function(e){{if(e.data&&e.data.blocklensFrame==="{fid}"&&f)'
            f'{{f.style.height=Math.min(6000,e.data.height+20)+"px";}}}});}})();</script>')
