/* Swagger UI for this service's own /openapi.json; nothing is fetched from another host. */
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  displayOperationId: true,
  showExtensions: true,
  validatorUrl: null, // the default posts the document to validator.swagger.io
  presets: [SwaggerUIBundle.presets.apis],
});
