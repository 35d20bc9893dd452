/* The console's API docs (/api/docs): Swagger UI, served from our own static files (npm, no
 * CDN) and started here rather than by an inline script, so the page keeps the strict CSP. */
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [window.SwaggerUIBundle.presets.apis],
  });
});
