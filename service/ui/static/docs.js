// Swagger UI on this server's schema, from the files the fastapi-offline package ships (no CDN).
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
