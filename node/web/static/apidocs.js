// Swagger UI for the node's API (admins only): requests made with "Try it out" carry the
// session's CSRF token, as the dashboard's own requests do.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  let csrf = null;
  try {
    const response = await fetch("/api/session", { headers: { Accept: "application/json" } });
    if (response.ok) csrf = (await response.json()).csrf_token;
  } catch (error) {
    console.error(error);
  }
  // eslint-disable-next-line no-undef
  SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    requestInterceptor: (request) => {
      if (csrf) request.headers["X-CSRF-Token"] = csrf;
      return request;
    },
  });
});
