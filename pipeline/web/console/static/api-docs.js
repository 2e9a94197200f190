// Starts the console's own copy of Swagger UI (no inline script: the CSP forbids it).
"use strict";
window.addEventListener("load", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({ url: root.dataset.openapi, dom_id: "#swagger-ui",
                                deepLinking: true });
});
