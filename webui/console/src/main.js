import { createApp } from 'vue';
import App from './App.vue';
import { router } from './router.js';
import { t, startI18n } from './i18n.js';
import { can } from './session.js';
import { fmtJson, fmtSize, fmtTime } from './composables.js';
import { setUnauthenticatedHandler } from './api.js';
import { clearSession } from './session.js';
import './style.css';

// A 401 UNAUTHENTICATED anywhere (expired or unknown session) returns to the login page.
setUnauthenticatedHandler(() => {
  clearSession();
  const cur = router.currentRoute.value;
  if (cur.name !== 'login') {
    router.replace({ name: 'login', query: { redirect: cur.fullPath, expired: '1' } });
  }
});

const app = createApp(App);
Object.assign(app.config.globalProperties, { t, can, fmtTime, fmtJson, fmtSize });
app.use(router);
startI18n(); // the shipped texts show at once; the server's overlay follows
app.mount('#app');
