# syntax=docker/dockerfile:1
# test/e2e/chart-install.test.ts runs these same steps without Docker (same
# files from the context, same commands) and then runs the entrypoint, as
# uid 65532, from the runtime stage's layout.

# Build: compile TypeScript with the dev dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src ./src
RUN npx tsc -p tsconfig.build.json

# Production dependencies only.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# Runtime: Node 24 with no shell and no package manager, as non-root
# (distroless "nonroot" is uid 65532; the chart's securityContext says so too).
FROM gcr.io/distroless/nodejs24-debian12:nonroot
ENV NODE_ENV=production
WORKDIR /app
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
USER 65532:65532
EXPOSE 8443 8081
ENTRYPOINT ["/nodejs/bin/node"]
CMD ["dist/cli.js", "serve"]
