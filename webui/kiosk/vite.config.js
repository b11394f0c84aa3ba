// Vite build of the kiosk business pages. dist/ is the business package terminal-native serves
// (headless: as static files at /; windowed: through the webview), so every asset path is
// relative ('./') and nothing is loaded from outside the package.
import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

export default defineConfig({
  base: './',
  plugins: [vue()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    sourcemap: false,
    // One bundle: every screen is there from the first paint (no loading between steps).
    assetsInlineLimit: 100_000,
    chunkSizeWarningLimit: 300,
  },
  server: {
    // `npm run dev` against a running terminal-native --headless (OPENTELLER_NATIVE, default :8780).
    proxy: {
      '/bridge': { target: (process.env.OPENTELLER_NATIVE || 'http://127.0.0.1:8780').replace(/^http/, 'ws'), ws: true },
    },
  },
});
