// Vite build of the kiosk business pages. dist/ is the business package terminal-native serves
// (headless: as static files at /; windowed: through the webview), so every asset path is
// relative ('./') and nothing is loaded from outside the package.
import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));

// dist/openteller-package.json: the package's name and version, which terminal-native shows in
// terminal.status (businessPackage) and journals at start (docs/terminal-native.md).
const manifest = {
  name: 'openteller-package-manifest',
  generateBundle() {
    this.emitFile({
      type: 'asset',
      fileName: 'openteller-package.json',
      source: JSON.stringify({ name: pkg.name, version: pkg.version }) + '\n',
    });
  },
};

export default defineConfig({
  base: './',
  plugins: [vue(), manifest],
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
