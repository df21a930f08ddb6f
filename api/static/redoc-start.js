/* ReDoc for this service's own /openapi.json, in the system's fonts. */
"use strict";
Redoc.init("/openapi.json", {
  hideDownloadButton: false,
  theme: {
    typography: {
      fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
      headings: { fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif" },
      code: { fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace" },
    },
  },
}, document.getElementById("redoc"));
