// The kiosk SPA: one page, every screen in one bundle, driven by flow.js.
import { createApp } from 'vue';
import App from './App.vue';
import { start } from './flow.js';
import './style.css';

createApp(App).mount('#app');
start().catch((e) => {
  console.error('kiosk start failed', e);
});
