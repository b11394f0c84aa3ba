// Vite build of the console. `backoffice` serves dist/ at `/` (index.html for unknown non-API
// paths) and the API under /api/v2 on the same origin, so the bundle uses absolute paths from `/`.
// `npm run dev` proxies /api to a running backoffice (OPENTELLER_BACKOFFICE, default :8080).
import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

export default defineConfig({
  base: '/',
  plugins: [vue()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    sourcemap: false,
    chunkSizeWarningLimit: 300,
  },
  server: {
    proxy: {
      '/api': process.env.OPENTELLER_BACKOFFICE || 'http://127.0.0.1:8080',
      '/readyz': process.env.OPENTELLER_BACKOFFICE || 'http://127.0.0.1:8080',
    },
  },
});
