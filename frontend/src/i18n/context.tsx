import { createContext, useContext } from 'react';
import { type Lang, type StringKey, translate } from './strings';

export const LangContext = createContext<Lang>('en');

export function useT(): { lang: Lang; t: (key: StringKey) => string } {
  const lang = useContext(LangContext);
  return { lang, t: (key) => translate(lang, key) };
}
