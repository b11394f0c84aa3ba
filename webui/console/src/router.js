// Routes of the console. Each page names the permissions that open it (any one of them, as the
// server builds the menus); the layout shows the 403 page when the user holds none.
import { createRouter, createWebHistory } from 'vue-router';
import { restore, session } from './session.js';
import Login from './pages/Login.vue';
import Layout from './components/Layout.vue';
import Home from './pages/Home.vue';
import NotFound from './pages/NotFound.vue';
import Orgs from './pages/Orgs.vue';
import Users from './pages/Users.vue';
import Roles from './pages/Roles.vue';
import Menus from './pages/Menus.vue';
import Dict from './pages/Dict.vue';
import I18nEntries from './pages/I18nEntries.vue';
import Tasks from './pages/Tasks.vue';
import Blacklist from './pages/Blacklist.vue';
import LoginLog from './pages/LoginLog.vue';
import AccessLog from './pages/AccessLog.vue';
import Audit from './pages/Audit.vue';
import Files from './pages/Files.vue';

const page = (path, name, component, perms) => ({ path, name, component, meta: { perms } });

export const routes = [
  { path: '/login', name: 'login', component: Login, meta: { public: true } },
  {
    path: '/',
    component: Layout,
    children: [
      { path: '', name: 'home', component: Home },
      page('orgs', 'orgs', Orgs, ['platform:org:query', 'platform:org:edit', 'platform:org:delete']),
      page('users', 'users', Users, ['platform:user:query', 'platform:user:edit', 'platform:user:delete', 'platform:user:unlock']),
      page('roles', 'roles', Roles, ['platform:role:query', 'platform:role:edit', 'platform:role:delete', 'platform:role:review']),
      page('menus', 'menus', Menus, ['platform:menu:query', 'platform:menu:edit', 'platform:menu:delete']),
      page('dict', 'dict', Dict, ['platform:dict:query', 'platform:dict:edit', 'platform:dict:delete']),
      page('i18n', 'i18n', I18nEntries, ['platform:i18n:query', 'platform:i18n:edit', 'platform:i18n:delete']),
      page('tasks', 'tasks', Tasks, ['platform:task:query', 'platform:task:edit', 'platform:task:delete', 'platform:task:run']),
      page('blacklist', 'blacklist', Blacklist, ['platform:blacklist:query', 'platform:blacklist:edit', 'platform:blacklist:delete']),
      page('login-log', 'login-log', LoginLog, ['platform:loginlog:query']),
      page('access-log', 'access-log', AccessLog, ['platform:accesslog:query']),
      page('audit', 'audit', Audit, ['audit:log:query']),
      page('files', 'files', Files, ['files:file:query', 'files:file:upload', 'files:file:delete']),
      { path: ':pathMatch(.*)*', name: 'not-found', component: NotFound },
    ],
  },
];

export const router = createRouter({ history: createWebHistory('/'), routes });

router.beforeEach(async (to) => {
  if (session.token && !session.checked) await restore();
  if (to.meta.public) {
    if (to.name === 'login' && session.token && session.data) return { name: 'home' };
    return true;
  }
  if (!session.token || !session.data) {
    return { name: 'login', query: to.fullPath === '/' ? {} : { redirect: to.fullPath } };
  }
  return true;
});
